"""Live channels and calls, channels created, channels lost, and the resyncs that correct the
live set.

The live gauges are not exported while the session is down (``live=True``), nor after a
reconnect until the first resync has corrected the live set (``ChannelTracker.stale``): the
events of the time in between were missed. The counters stay.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from ami_exporter.metrics.table import Samples, TableCollector, by_label, counter, gauge, one
from ami_exporter.state.channels import MAX_LIVE_CHANNELS
from ami_exporter.state.server import ServerState

S: Final = ("server",)


def _live(read: Callable[[ServerState], Samples]) -> Callable[[ServerState], Samples]:
    """A live gauge's reader that gives nothing while the live set is stale."""

    def live(st: ServerState) -> Samples:
        return () if st.tracker.stale else read(st)

    return live


TABLE: Final = (
    gauge(
        "asterisk_active_channels",
        "Live channels by technology (the text before '/' in the channel name).",
        ("server", "tech"),
        _live(lambda st: by_label(st.tracker.channels_by_tech)),
        live=True,
    ),
    gauge(
        "asterisk_active_channels_by_state",
        "Live channels by lower-case channel state (down, ring, ringing, up, busy...).",
        ("server", "state"),
        _live(lambda st: by_label(st.tracker.channels_by_state)),
        live=True,
    ),
    gauge(
        "asterisk_active_calls",
        "Live calls: distinct Linkedid among live channels (Uniqueid where none).",
        S,
        _live(lambda st: one(st.tracker.active_calls)),
        live=True,
    ),
    counter(
        "asterisk_channels_created",
        "Channels created (Newchannel events).",
        ("server", "tech"),
        lambda st: by_label(st.tracker.channels_created),
    ),
    counter(
        "asterisk_channels_lost",
        "Live channels forgotten without a Hangup because Asterisk went away with them, by "
        "reason: shutdown (a Shutdown event) or restart (a new boot found: FullyBooted Uptime "
        "or CoreStatus start time moved, e.g. after a crash or kill -9).",
        ("server", "reason"),
        lambda st: by_label(st.tracker.lost),
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
