"""Live channels and calls, channels created, and the resyncs that correct the live set."""

from __future__ import annotations

from typing import Final

from ami_exporter.metrics.table import TableCollector, by_label, counter, gauge, one
from ami_exporter.state.channels import MAX_LIVE_CHANNELS

S: Final = ("server",)

TABLE: Final = (
    gauge(
        "asterisk_active_channels",
        "Live channels by technology (the text before '/' in the channel name).",
        ("server", "tech"),
        lambda st: by_label(st.tracker.channels_by_tech),
    ),
    gauge(
        "asterisk_active_channels_by_state",
        "Live channels by lower-case channel state (down, ring, ringing, up, busy...).",
        ("server", "state"),
        lambda st: by_label(st.tracker.channels_by_state),
    ),
    gauge(
        "asterisk_active_calls",
        "Live calls: distinct Linkedid among live channels (Uniqueid where none).",
        S,
        lambda st: one(st.tracker.active_calls),
    ),
    counter(
        "asterisk_channels_created",
        "Channels created (Newchannel events).",
        ("server", "tech"),
        lambda st: by_label(st.tracker.channels_created),
    ),
    counter(
        "asterisk_channels_untracked",
        f"Channels not tracked as live because the per-server cap on live channels "
        f"({MAX_LIVE_CHANNELS:,}) was reached: each such Newchannel, and each resync item past "
        "the cap.",
        S,
        lambda st: one(st.tracker.untracked),
    ),
    counter(
        "asterisk_ami_resync_channels_removed",
        "Tracked channels a CoreShowChannels resync found gone (their Hangup was missed).",
        S,
        lambda st: one(st.tracker.resync_removed),
    ),
    counter(
        "asterisk_ami_resync_channels_added",
        "Live channels a CoreShowChannels resync found untracked (their Newchannel was "
        "missed, e.g. calls already up when the exporter connected).",
        S,
        lambda st: one(st.tracker.resync_added),
    ),
)


class ChannelsCollector(TableCollector):
    TABLE = TABLE
