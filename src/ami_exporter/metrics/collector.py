"""Prometheus collector: turns the plain per-server state into metric families at scrape time.

Nothing here is updated by events. Each scrape reads :class:`~ami_exporter.state.server.ServerState`
and builds fresh families, so a label set disappears as soon as the state drops it and a scrape
never waits on, or blocks, the AMI readers for longer than it takes to copy a few small dicts.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator, Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from ami_exporter import __version__
from ami_exporter.metrics.features import feature_families
from ami_exporter.state.server import ServerState


def _clean(value: str) -> str:
    """Label values must be valid UTF-8; AMI text may carry undecodable bytes."""
    return value.encode("utf-8", "replace").decode("utf-8")


class AMICollector(Collector):
    """Exposes every ``asterisk_*`` series for a fixed list of servers."""

    def __init__(self, states: Sequence[ServerState]) -> None:
        self._states = list(states)

    def describe(self) -> list[Metric]:
        # Without describe(), registering would call collect() once at start-up; the metric
        # set is dynamic, so declare nothing up front.
        return []

    def collect(self) -> Iterator[Metric]:
        S = ["server"]
        up = GaugeMetricFamily(
            "asterisk_ami_up", "1 while connected and logged in to AMI.", labels=S
        )
        attempts = CounterMetricFamily(
            "asterisk_ami_connection_attempts", "AMI TCP connection attempts.", labels=S
        )
        conn_errors = CounterMetricFamily(
            "asterisk_ami_connection_errors",
            "AMI connection failures before login, by reason "
            "(refused, timeout, unreachable, tls, other).",
            labels=["server", "reason"],
        )
        login_failures = CounterMetricFamily(
            "asterisk_ami_login_failures",
            "AMI login failures by reason (auth = 'Authentication failed', timeout, error).",
            labels=["server", "reason"],
        )
        disconnects = CounterMetricFamily(
            "asterisk_ami_disconnects",
            "AMI sessions lost after login, by reason (eof, shutdown, ping_timeout, error).",
            labels=["server", "reason"],
        )
        last_event = GaugeMetricFamily(
            "asterisk_ami_last_event_timestamp_seconds",
            "Unix time of the last AMI message received.",
            labels=S,
        )
        ping_rtt = GaugeMetricFamily(
            "asterisk_ami_ping_rtt_seconds", "Round trip time of the last AMI Ping.", labels=S
        )
        events = CounterMetricFamily(
            "asterisk_ami_events",
            "AMI events received, by event name (names outside a fixed list are 'other').",
            labels=["server", "event"],
        )
        malformed = CounterMetricFamily(
            "asterisk_ami_malformed_messages",
            "AMI messages skipped as malformed (bad framing, no key, oversized).",
            labels=S,
        )
        resync_removed = CounterMetricFamily(
            "asterisk_ami_resync_channels_removed",
            "Tracked channels a CoreShowChannels resync found gone (their Hangup was missed).",
            labels=S,
        )
        resync_added = CounterMetricFamily(
            "asterisk_ami_resync_channels_added",
            "Live channels a CoreShowChannels resync found untracked (their Newchannel was "
            "missed, e.g. calls already up when the exporter connected).",
            labels=S,
        )
        info = GaugeMetricFamily(
            "asterisk_info",
            "Asterisk identity from the AMI banner and CoreSettings; always 1.",
            labels=["server", "version", "ami_version", "system_name"],
        )
        startup = GaugeMetricFamily(
            "asterisk_core_startup_timestamp_seconds", "Unix time Asterisk started.", labels=S
        )
        reload_ = GaugeMetricFamily(
            "asterisk_core_reload_timestamp_seconds",
            "Unix time of Asterisk's last configuration reload.",
            labels=S,
        )
        active = GaugeMetricFamily(
            "asterisk_active_channels",
            "Live channels by technology (the text before '/' in the channel name).",
            labels=["server", "tech"],
        )
        by_state = GaugeMetricFamily(
            "asterisk_active_channels_by_state",
            "Live channels by lower-case channel state (down, ring, ringing, up, busy...).",
            labels=["server", "state"],
        )
        calls = GaugeMetricFamily(
            "asterisk_active_calls",
            "Live calls: distinct Linkedid among live channels (Uniqueid where none).",
            labels=S,
        )
        created = CounterMetricFamily(
            "asterisk_channels_created", "Channels created (Newchannel events).",
            labels=["server", "tech"],
        )  # fmt: skip
        hangups = CounterMetricFamily(
            "asterisk_hangups",
            "Channel hangups (Hangup events) by technology and Q.850 cause.",
            labels=["server", "tech", "cause", "cause_name"],
        )
        originates = CounterMetricFamily(
            "asterisk_originates",
            "Async originate outcomes (OriginateResponse events) by result and reason.",
            labels=["server", "result", "reason"],
        )
        dials = CounterMetricFamily(
            "asterisk_dials", "Dial outcomes (DialEnd events) by lower-case DialStatus.",
            labels=["server", "status"],
        )  # fmt: skip
        duration = HistogramMetricFamily(
            "asterisk_channel_duration_seconds",
            "Channel lifetime from Newchannel to Hangup, for channels whose Newchannel was seen.",
            labels=["server", "tech"],
        )
        security = CounterMetricFamily(
            "asterisk_security_events",
            "Asterisk security events (class security) by service and event name.",
            labels=["server", "service", "event"],
        )

        for st in self._states:
            st.settle()
            s = st.name
            up.add_metric([s], 1.0 if st.up else 0.0)
            attempts.add_metric([s], st.connection_attempts)
            for reason, n in list(st.connection_errors.items()):
                conn_errors.add_metric([s, reason], n)
            for reason, n in list(st.login_failures.items()):
                login_failures.add_metric([s, reason], n)
            for reason, n in list(st.disconnects.items()):
                disconnects.add_metric([s, reason], n)
            if st.last_event_timestamp is not None:
                last_event.add_metric([s], st.last_event_timestamp)
            if st.ping_rtt is not None:
                ping_rtt.add_metric([s], st.ping_rtt)
            for name, n in list(st.events.items()):
                events.add_metric([s, name], n)
            malformed.add_metric([s], st.malformed)
            resync_removed.add_metric([s], st.resync_removed)
            resync_added.add_metric([s], st.resync_added)
            if st.version or st.ami_version:
                info.add_metric(
                    [s, _clean(st.version), _clean(st.ami_version), _clean(st.system_name)], 1.0
                )
            if st.startup_timestamp is not None:
                startup.add_metric([s], st.startup_timestamp)
            if st.reload_timestamp is not None:
                reload_.add_metric([s], st.reload_timestamp)
            for tech, n in list(st.channels_by_tech.items()):
                active.add_metric([s, tech], n)
            for state, n in list(st.channels_by_state.items()):
                by_state.add_metric([s, state], n)
            calls.add_metric([s], st.active_calls)
            for tech, n in list(st.channels_created.items()):
                created.add_metric([s, tech], n)
            for (tech, cause, cause_name), n in list(st.hangups.items()):
                hangups.add_metric([s, tech, cause, cause_name], n)
            for (result, reason), n in list(st.originates.items()):
                originates.add_metric([s, result, reason], n)
            for status, n in list(st.dials.items()):
                dials.add_metric([s, status], n)
            for tech, hist in list(st.durations.items()):
                duration.add_metric([s, tech], hist.cumulative(), hist.total)
            for (service, event), n in list(st.security.items()):
                security.add_metric([s, service, event], n)

        yield from (
            up, attempts, conn_errors, login_failures, disconnects, last_event, ping_rtt,
            events, malformed, resync_removed, resync_added, info, startup, reload_, active,
            by_state, calls, created, hangups, originates, dials, duration, security,
        )  # fmt: skip
        yield from feature_families(self._states)  # peers, registrations, queues, VICIdial

        build = GaugeMetricFamily(
            "asterisk_exporter_build_info",
            "ami-exporter build information; always 1.",
            labels=["version", "python_version"],
        )
        build.add_metric([__version__, platform.python_version()], 1.0)
        yield build


def build_registry(states: Sequence[ServerState]) -> CollectorRegistry:
    """A registry with the AMI collector plus the standard process metrics."""
    from prometheus_client import ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(AMICollector(states))
    ProcessCollector(registry=registry)
    return registry
