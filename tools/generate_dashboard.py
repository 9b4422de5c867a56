#!/usr/bin/env python3
"""Generate the Grafana dashboard ``dashboards/asterisk-ami.json`` with Grafana's foundation SDK.

Usage::

    python3 tools/generate_dashboard.py           # (re)write dashboards/asterisk-ami.json
    python3 tools/generate_dashboard.py --check   # exit 1 (and a diff) if the file differs
    python3 tools/generate_dashboard.py --stdout  # print the dashboard, write nothing

Needs the ``dashboard`` extra (``python3 -m pip install -e '.[dashboard]'``):
``grafana-foundation-sdk``, the types and builders Grafana Labs generates from Grafana's own
schemas, in its build for Grafana 10.4. The SDK is a development tool only: the JSON file is
what users import or provision, and the installed package never imports the SDK.

The layout serves an operator of a 20-server cluster asking "is anything wrong, and where?",
after the model dashboards (Node Exporter Full, the mysqld and snmp/windows fleet mixins): a
status row of problem counts and a table with one row per server first, state timelines for
0/1 series, annotations for restarts and alerts, the detail rows collapsed, the exporter
last. What the alert rules decide (the trunk filter, the congestion causes, the thresholds) is
read from ``alerts/ami-exporter.rules.yml``, so a panel turns red where an alert fires and the
two cannot drift apart.

Where the SDK's schema lacks a field Grafana reads, a small subclass of an SDK model adds it
(as the SDK's README shows for custom query types): ``definition`` on query variables, the
Prometheus annotation fields (``step``, ``titleFormat``, ``useValueForTime``...), field data
links without the dashboard-link keys.

The output is deterministic: ids in document order, every position computed here, keys sorted
(as Grafana's own JSON export sorts them), two-space indent, a final newline.
``tests/test_dashboard_code.py`` fails while the committed file differs from this output.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Generic, Protocol, Self, TypeVar

import yaml
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import heatmap, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders.prometheus import Dataquery as PromQuery
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common, units
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import heatmap as hm
from grafana_foundation_sdk.models.prometheus import PromQueryFormat, QueryEditorMode

ROOT: Final = Path(__file__).resolve().parents[1]
OUTPUT: Final = ROOT / "dashboards" / "asterisk-ami.json"
RULES: Final = ROOT / "alerts" / "ami-exporter.rules.yml"
RECORDING: Final = ROOT / "alerts" / "ami-exporter.recording.yml"

UID: Final = "ami-exporter-asterisk"
SCHEMA_VERSION: Final = 39  # what Grafana 10.3 and 10.4 write; the SDK's model says 36
DS: Final = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
HANGUP_CAUSES_DOC: Final = (
    "https://docs.asterisk.org/Configuration/Miscellaneous/Hangup-Cause-Mappings/"
)
DIAL_DOC: Final = (
    "https://docs.asterisk.org/Latest_API/API_Documentation/Dialplan_Applications/Dial/"
)


# -- what the alert rules decide -----------------------------------------------------------


def _expressions(path: Path, kind: str) -> dict[str, str]:
    """Each rule's expression by its name, for the rules of ``kind`` (alert or record)."""
    rules = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {r[kind]: r["expr"] for g in rules["groups"] for r in g["rules"] if kind in r}


def _first_group(path: Path, exprs: dict[str, str], name: str, pattern: str) -> str:
    m = re.search(pattern, exprs[name])
    if m is None:
        raise SystemExit(f"{path.name}: {name} no longer matches {pattern!r}")
    return m[1]


ALERT_EXPRS: Final = _expressions(RULES, "alert")


def from_alert(alert: str, pattern: str) -> str:
    """The first group of ``pattern`` in an alert's expression; fails if the rule changed."""
    return _first_group(RULES, ALERT_EXPRS, alert, pattern)


_RATIO_ABOVE: Final = r"\)\s*>\s*([\d.]+)"
# The peers that are trunks: AsteriskTrunkUnreachable's matcher (agent phones left out).
TRUNKS: Final = from_alert("AsteriskTrunkUnreachable", r'asterisk_peer_up\{(peer!~"[^"]*")\}')
CONGESTION_CAUSES: Final = from_alert("AsteriskHangupCongestionShareHigh", r'cause=~"([^"]*)"')
CONGESTION_SHARE: Final = float(from_alert("AsteriskHangupCongestionShareHigh", _RATIO_ABOVE))
ORIGINATE_FAILURE: Final = float(from_alert("AsteriskOriginateFailureRatioHigh", _RATIO_ABOVE))
ORIGINATE_FLOOR: Final = round(1 - ORIGINATE_FAILURE, 6)
NER_FLOOR: Final = round(1 - CONGESTION_SHARE, 6)
RESTART_SECONDS: Final = float(from_alert("AsteriskRestarted", r"<\s*([\d.]+)"))
LOGIN_WINDOW: Final = from_alert("AsteriskAMILoginFailures", r"\[(\w+)\]")
QUEUE_HOLD: Final = float(from_alert("AsteriskQueueCallersWaitingTooLong", r">=\s*([\d.]+)"))
# Per carrier, call quality and queue service level: the alerts over the recorded series.
_BELOW: Final = r":\w+\{?[^}\n]*\}?\s*<\s*([\d.]+)"
_ABOVE: Final = r":\w+\s*>\s*([\d.]+)"
_FLOOR: Final = r"\*\s*\d+\s*>=\s*(\d+)"
ASR_FLOOR: Final = float(from_alert("AsteriskTrunkASRCollapsed", _BELOW))
ASR_MIN_CALLS: Final = int(from_alert("AsteriskTrunkASRCollapsed", _FLOOR))
PDD_P95_MAX: Final = float(from_alert("AsteriskTrunkPostDialDelayHigh", _ABOVE))
LOSS_P95_MAX: Final = float(from_alert("AsteriskTrunkRTPLossHigh", _ABOVE))
JITTER_P95_MAX: Final = float(from_alert("AsteriskTrunkRTPJitterHigh", _ABOVE))
MES_P5_MIN: Final = float(from_alert("AsteriskTrunkMediaExperienceLow", _BELOW))
SERVICE_LEVEL_GOAL: Final = float(from_alert("AsteriskQueueServiceLevelMissed", _BELOW))
RESTARTS_PER_HOUR: Final = float(from_alert("AsteriskRestartingRepeatedly", r">=\s*([\d.]+)"))
LOSS_NOTICEABLE: Final = 0.01  # the review's lower band: loss a listener starts to notice


RECORDED_EXPRS: Final = _expressions(RECORDING, "record")


def from_record(record: str, pattern: str) -> str:
    """The first group of ``pattern`` in a recording rule; fails if the rule changed."""
    return _first_group(RECORDING, RECORDED_EXPRS, record, pattern)


_CALLS: Final = "server_trunk_direction:asterisk_trunk_calls"
# The outcomes ASR and NER count, as the recording rules (and so the alerts) count them.
ANSWERED: Final = from_record(f"{_CALLS}_answered:rate15m", r'(outcome="[^"]*")')
EFFECTIVE: Final = from_record(f"{_CALLS}_effective:rate15m", r'(outcome=~"[^"]*")')
_WITHIN: Final = "server_queue:asterisk_queue_callers_answered_within_20s:rate15m"
# The service level's wait bucket, as the recording rule reads it (le="20.0").
SERVICE_LEVEL_LE: Final = from_record(_WITHIN, r'le="([\d.]+)"')
SERVICE_LEVEL_SECONDS: Final = float(SERVICE_LEVEL_LE)


def pct(share: float) -> str:
    """A share as the README writes it: 0.2 -> "20 %"."""
    return f"{share * 100:.0f} %"


# -- PromQL --------------------------------------------------------------------------------

# Every selector of an exporter series; Prometheus' own series (up, ALERTS) have no server.
SCOPE: Final = 'job=~"$job", instance=~"$instance", server=~"$server"'
TARGETS: Final = 'job=~"$job", instance=~"$instance"'
BY_SERVER: Final = "job, instance, server"
CRITICAL: Final = 'severity="critical"'
WARNING: Final = 'severity="warning"'
THIS_SERVER: Final = 'server=~"$server"'
SUCCESS: Final = 'result="success"'
FAILURE: Final = 'result="failure"'
NOT_CAUSE_0: Final = 'cause!="0"'  # cause 0: mostly the ;1 half of Local channels
NOT_LOCAL: Final = 'tech!="Local"'
# The exporter's own build information: per exporter instance, no server label (issue #14).
BUILD_INFO: Final = "ami_exporter_build_info"
# The trunk metrics are scoped to the $trunk variable too.
TRUNK_SCOPE: Final = f'{SCOPE}, trunk=~"$trunk"'
OUTBOUND: Final = 'direction="outbound"'
BY_CARRIER: Final = "trunk"
TOP_CARRIERS: Final = 10
# The callers the service level counts, as the recording rule counts them.
LEFT_QUEUE: Final = from_record(
    "server_queue:asterisk_queue_callers_left:rate15m", r'(outcome=~"[^"]*")'
)
OUTCOME_COLOURS: Final = {
    "answered": "green",
    "busy": "yellow",
    "no_answer": "blue",
    "congestion": "red",
    "unallocated": "orange",
    "rejected": "purple",
    "cancelled": "#8e8e8e",
    "failed": "dark-red",
}
SIP_CODES_DOC: Final = (
    "https://www.iana.org/assignments/sip-parameters/sip-parameters.xhtml#sip-parameters-7"
)
# Dial() outcomes: attempts that reached the network, and those the network did not fail.
DIAL_ATTEMPTS: Final = 'status=~"answer|busy|noanswer|cancel|congestion|chanunavail"'
DIAL_COMPLETED: Final = 'status=~"answer|busy|noanswer|cancel"'
FAILED_AUTH: Final = 'event=~"InvalidPassword|InvalidAccountID|ChallengeResponseFailed|FailedACL"'


def sel(metric: str, *matchers: str, offset: str = "", scope: str = SCOPE) -> str:
    """A selector scoped to the dashboard's variables."""
    text = f"{metric}{{{', '.join([scope, *matchers])}}}"
    return f"{text} offset {offset}" if offset else text


def live(metric: str, *matchers: str, offset: str = "", scope: str = SCOPE) -> str:
    """A live-state gauge without the values frozen at their last state while AMI is down."""
    up = f"max by ({BY_SERVER}) ({sel('asterisk_ami_up', offset=offset)}) == 1"
    return f"({sel(metric, *matchers, offset=offset, scope=scope)} and on ({BY_SERVER}) ({up}))"


def rate(metric: str, *matchers: str, offset: str = "") -> str:
    shift = f" offset {offset}" if offset else ""
    return f"rate({sel(metric, *matchers)}[$__rate_interval]{shift})"


def increase(metric: str, *matchers: str, at_end: bool = False) -> str:
    """The increase over the dashboard's time range (``@ end()``: the same for every step)."""
    return f"increase({sel(metric, *matchers)}[$__range]{' @ end()' if at_end else ''})"


def ratio(numerator: str, denominator: str, by: str = "server") -> str:
    total = f"sum by ({by}) " if by else "sum"
    return f"{total}({numerator}) / {total}({denominator})"


def per_minute(metric: str, by: str, *matchers: str) -> str:
    """A counter as events per minute: steady under zoom, unlike increase over an interval."""
    return f"sum by ({by}) ({rate(metric, *matchers)}) * 60"


def seen(by: str = "server") -> str:
    """0 for every server that reported in the time range: a vanished server reads 0."""
    return f"0 * max by ({by}) (last_over_time({sel('asterisk_ami_up')}[$__range]))"


def firing(*matchers: str) -> str:
    return sel("ALERTS", 'alertstate="firing"', *matchers, scope=TARGETS)


def latest(metric: str, by: str = "server", *matchers: str) -> str:
    return f"max by ({by}) ({sel(metric, *matchers)})"


def age(metric: str) -> str:
    return f"time() - {latest(metric)}"


def cause_in(causes: str) -> str:
    return f'cause=~"{causes}"'


# -- what the SDK's schema lacks -----------------------------------------------------------

T = TypeVar("T")


class Built(cogbuilder.Builder[T], Generic[T]):
    """The builder of a finished model: hands an SDK builder a model it cannot build."""

    def __init__(self, model: T) -> None:
        self._model = model

    def build(self) -> T:
        return self._model


class Variable(dm.VariableModel):
    """A variable with the ``definition`` Grafana's Prometheus editor writes (the query text
    of the variables list), without the interval-variable fields (``auto``, ``auto_min``,
    ``auto_count``) the SDK's model gives every variable."""

    def __init__(self, definition: str | None = None, **fields: Any) -> None:
        super().__init__(**fields)
        self.definition = definition
        self.auto = self.auto_min = self.auto_count = None

    @classmethod
    def of(
        cls, builder: cogbuilder.Builder[dm.VariableModel], definition: str | None = None
    ) -> Built[dm.VariableModel]:
        return Built(cls(definition, **vars(builder.build())))

    def to_json(self) -> dict[str, object]:
        payload = super().to_json()
        if self.definition is not None:
            payload["definition"] = self.definition
        return payload


@dataclass
class PromFields:
    """The fields Grafana's Prometheus data source reads from an annotation beside ``expr``."""

    title: str
    text: str
    tags: str
    step: str = "1m"
    value_is_time: bool = False


class PromAnnotation(dm.AnnotationQuery):
    """A Prometheus annotation (the SDK's AnnotationQuery, like grafonnet's, ends at expr)."""

    def __init__(self, query: db.AnnotationQuery, prom: PromFields) -> None:
        super().__init__(**vars(query.build()))
        self.prom = prom

    def to_json(self) -> dict[str, object]:
        payload = super().to_json()
        payload["step"] = self.prom.step
        payload["titleFormat"] = self.prom.title
        payload["textFormat"] = self.prom.text
        payload["tagKeys"] = self.prom.tags
        if self.prom.value_is_time:
            payload["useValueForTime"] = True
        return payload


class DataLink:
    """A field's data link. The SDK types these as dashboard links, whose other keys
    (``asDropdown``, ``tags``, ``keepTime``...) mean nothing on a field."""

    def __init__(self, title: str, url: str, *, target_blank: bool = False) -> None:
        self.title = title
        self.url = url
        self.target_blank = target_blank

    def to_json(self) -> dict[str, object]:
        return {"title": self.title, "url": self.url, "targetBlank": self.target_blank}


def data_links(*links: DataLink) -> dm.DynamicConfigValue:
    return dm.DynamicConfigValue(id_val="links", value=list(links))


STATUS_PAGE: Final = DataLink(
    "Exporter status page", "http://${__field.labels.instance}/", target_blank=True
)


# -- panels --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Q:
    """One Prometheus query of a panel; refIds follow the order (A, B, ...)."""

    expr: str
    legend: str = ""
    instant: bool = False
    fmt: PromQueryFormat | None = None


def _target(q: Q, ref_id: str) -> PromQuery:
    target = PromQuery().datasource(DS).ref_id(ref_id).expr(q.expr)
    target = target.editor_mode(QueryEditorMode.CODE)
    target = target.instant() if q.instant else target.range()
    if q.legend:
        target = target.legend_format(q.legend)
    if q.fmt is not None:
        target = target.format(q.fmt)
    return target


class PanelBuilder(Protocol):
    """What every SDK panel builder has (they share no base class with these methods)."""

    def title(self, title: str) -> Self: ...
    def description(self, description: str) -> Self: ...
    def datasource(self, datasource: dm.DataSourceRef) -> Self: ...
    def unit(self, unit: str) -> Self: ...
    def with_target(self, target: cogbuilder.Builder[Any]) -> Self: ...
    def override_by_name(self, name: str, properties: list[dm.DynamicConfigValue]) -> Self: ...
    def build(self) -> dm.Panel: ...


P = TypeVar("P", bound=PanelBuilder)


def panel(builder: P, title: str, unit: str, queries: Sequence[Q]) -> P:
    """What every panel has: a title, its description, a unit, the data source, queries."""
    builder = builder.title(title).description(DESCRIPTIONS[title]).unit(unit).datasource(DS)
    for i, q in enumerate(queries):
        builder = builder.with_target(_target(q, chr(ord("A") + i)))
    return builder


def steps(base: str, *levels: tuple[float, str]) -> db.ThresholdsConfig:
    """Absolute thresholds: ``base`` colour, then each (value, colour) from that value up."""
    thresholds = [dm.Threshold(value=None, color=base)]
    thresholds += [dm.Threshold(value=v, color=c) for v, c in levels]
    return db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(thresholds)


def fixed(colour: str) -> dm.FieldColor:
    return dm.FieldColor(mode=dm.FieldColorModeId.FIXED, fixed_color=colour)


UP_DOWN: Final[list[dm.ValueMapping]] = [
    dm.ValueMap(
        options={
            "0": dm.ValueMappingResult(text="DOWN", color="red", index=0),
            "1": dm.ValueMappingResult(text="UP", color="green", index=1),
        }
    )
]
NO_DATA: Final = "N/A"
NULL_IS_NO_DATA: Final[list[dm.ValueMapping]] = [
    dm.SpecialValueMap(
        options=dm.DashboardSpecialValueMapOptions(
            match=dm.SpecialValueMatch.NULL, result=dm.ValueMappingResult(text=NO_DATA)
        )
    )
]


def legend(*, right: bool) -> cb.VizLegendOptions:
    """A table legend sorted by the last value, right of the graph on wide panels."""
    return (
        cb.VizLegendOptions()
        .display_mode(common.LegendDisplayMode.TABLE)
        .placement(common.LegendPlacement.RIGHT if right else common.LegendPlacement.BOTTOM)
        .show_legend(True)
        .calcs(["lastNotNull", "max"])
        .sort_by("Last *")
        .sort_desc(True)
    )


def graph(title: str, unit: str, queries: Sequence[Q], *, right: bool = False) -> timeseries.Panel:
    """A time series: thin lines, table legend, a shared tooltip sorted high to low."""
    tooltip = cb.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI)
    return (
        panel(timeseries.Panel(), title, unit, queries)
        .line_width(1)
        .fill_opacity(10)
        .show_points(common.VisibilityMode.NEVER)
        .span_nulls(False)
        .legend(legend(right=right))
        .tooltip(tooltip.sort(common.SortOrder.DESCENDING))
        .thresholds(steps("green"))
    )


def dashed_at(builder: timeseries.Panel, base: str, *levels: tuple[float, str]) -> timeseries.Panel:
    """Thresholds drawn as dashed lines: where an alert fires."""
    style = cb.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED)
    return builder.thresholds(steps(base, *levels)).thresholds_style(style)


def compared(builder: timeseries.Panel, *names: str) -> timeseries.Panel:
    """Series of earlier periods (``offset``) drawn grey and dashed."""
    dashed = common.LineStyle(fill="dash", dash=[10, 10])
    for name in names:
        builder = builder.override_by_name(
            name,
            [
                dm.DynamicConfigValue(id_val="color", value=fixed("#8e8e8e")),
                dm.DynamicConfigValue(id_val="custom.lineStyle", value=dashed),
            ],
        )
    return builder


def colours(builder: P, by_name: dict[str, str]) -> P:
    """A fixed colour per series: an outcome keeps its colour whatever the others do."""
    for name, colour in by_name.items():
        builder = builder.override_by_name(
            name, [dm.DynamicConfigValue(id_val="color", value=fixed(colour))]
        )
    return builder


def count(title: str, expr: str, *, warn: str = "red", base: str = "green") -> stat.Panel:
    """A count of the status row: ``base`` at 0, ``warn`` from 1; instant, no sparkline."""
    levels = [(1.0, warn)] if warn != base else []
    return (
        panel(stat.Panel(), title, units.Short, [Q(expr, instant=True)])
        .thresholds(steps(base, *levels))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .text_mode(common.BigValueTextMode.VALUE)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .no_value(NO_DATA)
        .mappings(NULL_IS_NO_DATA)
        .decimals(0)
    )


def neutral(title: str, expr: str) -> stat.Panel:
    """A count that is neither good nor bad: blue."""
    return count(title, expr, warn="blue", base="blue").color_mode(common.BigValueColorMode.VALUE)


def timeline(title: str, queries: Sequence[Q]) -> statetimeline.Panel:
    """0/1 series as lanes, one per series: UP green, DOWN red (common-lib statusHistory)."""
    return (
        panel(statetimeline.Panel(), title, units.NoUnit, queries)
        .mappings(UP_DOWN)
        .thresholds(steps("red", (1, "green")))
        .color_scheme(db.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS))
        .show_value(common.VisibilityMode.NEVER)
        .merge_values(True)
        .row_height(0.9)
        .fill_opacity(80)
        .line_width(0)
        .max_data_points(100)
        .legend(
            cb.VizLegendOptions().show_legend(False).display_mode(common.LegendDisplayMode.LIST)
        )
        .tooltip(cb.VizTooltipOptions().mode(common.TooltipDisplayMode.SINGLE))
    )


def grid(title: str, unit: str, queries: Sequence[Q]) -> table.Panel:
    """A table of instant queries."""
    return (
        panel(table.Panel(), title, unit, queries)
        .cell_height(common.TableCellHeight.SM)
        .show_header(True)
        .thresholds(steps("text"))
    )


def organize(
    exclude: Sequence[str], order: Sequence[str], rename: dict[str, str]
) -> dm.DataTransformerConfig:
    """Grafana's organize transformation: hide, order and rename the table's fields."""
    options = {
        "excludeByName": dict.fromkeys(exclude, True),
        "indexByName": {name: i for i, name in enumerate(order)},
        "renameByName": rename,
    }
    return dm.DataTransformerConfig(id_val="organize", options=options)


def doc_link(title: str, url: str) -> db.DashboardLink:
    return db.DashboardLink(title).type(dm.DashboardLinkType.LINK).url(url).target_blank(True)


# -- descriptions: every panel's, by title -------------------------------------------------

_TRUNK_NOTE: Final = (
    f"Trunks are the peers matching {TRUNKS}, the filter of the AsteriskTrunkUnreachable alert: "
    "agent phones and extensions, whose names are all digits, are left out."
)
DESCRIPTIONS: Final = {
    # Cluster status
    "Servers without AMI": (
        "Asterisk servers whose AMI session is down (asterisk_ami_up 0), or that reported in "
        "the time range and report nothing now (their exporter is down or no longer watches "
        "them): every other metric of such a server is frozen or missing. The Servers table "
        "names them."
    ),
    "Exporter targets down": (
        "Exporter scrape targets Prometheus cannot scrape (up 0): nothing is known about the "
        "Asterisk servers they watch. AsteriskExporterDown fires after 2 minutes."
    ),
    "Trunks down": (
        f"Trunks unreachable or unregistered now (asterisk_peer_up 0). {_TRUNK_NOTE} "
        "AsteriskTrunkUnreachable fires after 5 minutes."
    ),
    "Registrations down": (
        "Outbound registrations not Registered now (asterisk_registration_up 0): inbound calls "
        "to them do not arrive. 0 on clusters without registrations. AsteriskRegistrationLost "
        "fires after 5 minutes."
    ),
    "Servers with login failures": (
        f"Servers with at least one AMI login failure in the last {LOGIN_WINDOW}, the window of "
        "the AsteriskAMILoginFailures alert: a dialer with the same manager.conf cannot place "
        "calls either."
    ),
    "Critical alerts firing": (
        "Firing alerts of severity critical for the selected jobs and instances: the ALERTS "
        "series of the Prometheus that evaluates alerts/ami-exporter.rules.yml (0 where this "
        "data source does not evaluate them). The dashboard link Alerts opens the list."
    ),
    "Warning alerts firing": "Firing alerts of severity warning (ALERTS), as the critical ones.",
    "Calls now and a week ago": (
        "Live calls on the selected servers (asterisk_active_calls; servers whose AMI is down "
        "left out), and at the same time one week earlier (offset 1w; absent without a week "
        "of data)."
    ),
    "Servers": (
        "One row per Asterisk server, those with firing alerts first; the server name opens "
        "this dashboard for it alone. Alerts: firing alerts naming the server. AMI: the AMI "
        "session; DOWN also for a server that reported in the time range and reports nothing "
        f"now. Uptime orange and Since reload yellow under {RESTART_SECONDS:.0f} s, as "
        "AsteriskRestarted. Restarts: Asterisk restarts the exporter detected in the "
        f"dashboard's time range (asterisk_restarts_total), red from {RESTARTS_PER_HOUR:.0f}, "
        "as AsteriskRestartingRepeatedly counts them in an hour. Calls: live calls. "
        "Channels/s, Originate success (red under "
        f"{pct(ORIGINATE_FLOOR)}, as AsteriskOriginateFailureRatioHigh) and Congestion share "
        f"(causes {CONGESTION_CAUSES.replace('|', ', ')} among the hangups other than cause 0, "
        f"red from {pct(CONGESTION_SHARE)}, as AsteriskHangupCongestionShareHigh) over about "
        "10 minutes, the panel's minimum interval. Trunks and Registrations down now. Login "
        "failures over the dashboard's time range. Last message: age of the last AMI message, "
        "pings included (orange from 30 s, red from 60 s: pings unanswered at the default 10 s "
        "interval). Ping: AMI Ping round trip. An empty cell: the server has no such series."
    ),
    "AMI up over time": (
        "asterisk_ami_up per server: one lane per server, UP green, DOWN red (a lost or "
        "refused AMI session); a gap: the exporter reported nothing."
    ),
    # Calls
    "Active calls": (
        "Live calls on the selected servers (asterisk_active_calls: distinct Linkedid among live "
        "channels; servers whose AMI is down left out), against the same time 1 day and 1 week "
        "earlier (grey, dashed)."
    ),
    "Channels created": (
        "New channels per second on the selected servers (rate of "
        "asterisk_channels_created_total), the call volume, against 1 day and 1 week earlier "
        "(grey, dashed). AsteriskNoCalls fires when it stops where it usually does not."
    ),
    "Originate success ratio": (
        "Share of originates that succeeded (answered), per server. A dialer's normal ratio "
        "depends on its lists; a sudden drop means trunk, carrier or dialplan trouble. Dashed: "
        f"{pct(ORIGINATE_FLOOR)}, below which AsteriskOriginateFailureRatioHigh fires."
    ),
    "ASR and NER": (
        "Answer-seizure ratio: answered Dial() attempts among those that reached the network "
        "(answer, busy, noanswer, cancel, congestion, chanunavail); network effectiveness "
        "ratio: the same without the network's failures (congestion, chanunavail); from "
        "asterisk_dials_total, against 1 week earlier (grey, dashed). Dashed line: NER "
        f"{pct(NER_FLOOR)}, the counterpart of the congestion share at which "
        "AsteriskHangupCongestionShareHigh fires."
    ),
    # Call outcomes
    "Dial outcomes by status": (
        "Dial() outcomes by DialStatus (rate of asterisk_dials_total, from DialEnd), stacked to "
        "100 %: answered green, busy yellow, no answer blue, congestion red, channel "
        "unavailable orange, cancelled purple."
    ),
    "Originate rate": (
        "Async originates per second by result (rate of asterisk_originates_total, from "
        "OriginateResponse), stacked."
    ),
    "Originate failures by reason": (
        "Failed originates per second by reason (busy, no_answer, congestion, failed, "
        "hangup...). Asterisk reports an unanswered or rejected originate as reason 0 (failed)."
    ),
    "Share of failure causes": (
        "Share of the hangups (cause 0 excluded) per group of Q.850 causes: congestion/network "
        f"({CONGESTION_CAUSES.replace('|', ', ')}: carrier congestion or outage; dashed at "
        f"{pct(CONGESTION_SHARE)}, where AsteriskHangupCongestionShareHigh fires), bad numbers "
        "(1, 3, 28), rejected (21: rejection or trunk authentication), no answer (18, 19). Per "
        "server in the Servers table."
    ),
    "Top hangup causes": (
        "Hangups per second of the 10 causes most frequent over the whole time range (the set "
        "is fixed with @ end(), so lines do not come and go between steps), cause 0 excluded "
        "(asterisk_hangups_total)."
    ),
    "Hangups by cause over the time range": (
        "Hangups in the dashboard's time range per Q.850 cause (increase of "
        "asterisk_hangups_total over $__range), most frequent first; cause 0 (the ;1 halves of "
        "Local channels) excluded."
    ),
    # Channels
    "Active channels by technology": (
        "Live channels by technology (asterisk_active_channels; servers whose AMI is down left "
        "out). VICIdial wraps every call in a Local pair, so Local doubles the count."
    ),
    "Active channels by state": (
        "Live channels by state (asterisk_active_channels_by_state): many channels stuck in "
        "ring or ringing mean calls are not being answered or completed."
    ),
    "Channel duration distribution": (
        "Non-Local channels ended per second by lifetime bucket "
        "(asterisk_channel_duration_seconds_bucket, buckets 1 s to 1 h): the shape behind the "
        "percentiles, with the agent legs that stay up all shift in the top rows."
    ),
    "Channel duration percentiles": (
        "Median, 90th and 99th percentile of the lifetime of non-Local channels (Newchannel to "
        "Hangup) from the asterisk_channel_duration_seconds histogram. Agent phone legs that "
        "stay up all shift count too, and a percentile above the last bucket reads 3600 s (1 h), "
        "the largest finite bucket."
    ),
    "Average channel duration": (
        "Mean channel lifetime per technology (sum / count of "
        "asterisk_channel_duration_seconds), Local included."
    ),
    # Trunks: per carrier
    "Carriers": (
        "One row per server and carrier (the trunk label: the endpoint of the PJSIP/SIP/IAX2 "
        "channel), the busiest first, over about 10 minutes (the panel's minimum interval). "
        "Calls/min: trunk channels ended per minute, both directions. ASR: answered share of "
        f"the outbound calls, red under {pct(ASR_FLOOR)} (AsteriskTrunkASRCollapsed, which also "
        f"needs {ASR_MIN_CALLS} calls in 15 minutes). NER: the outbound calls the network "
        "delivered (answered, busy, no answer, rejected, cancelled). PDD p95: post-dial delay, "
        f"red above {PDD_P95_MAX:g} s (AsteriskTrunkPostDialDelayHigh). ACD: mean answered call "
        "duration. Channels: live channels now. Loss, jitter: the 95th percentile of the worse "
        f"stream, red from {pct(LOSS_P95_MAX)} and {JITTER_P95_MAX * 1000:g} ms; MES p5: the "
        f"5th percentile of the worse stream, red under {MES_P5_MIN:g}. An empty cell: no such "
        "observation in the window."
    ),
    "ASR per carrier": (
        "Answer-seizure ratio per carrier: answered outbound trunk calls among all outbound "
        "trunk calls that ended (asterisk_trunk_calls_total, the same outcomes as the recording "
        "rule server_trunk_direction:asterisk_trunk_asr:ratio_rate15m), summed over the selected "
        "servers, against 1 week earlier (grey, dashed). The "
        f"{TOP_CARRIERS} carriers with the most calls in the time range. Dashed: "
        f"{pct(ASR_FLOOR)}, under which AsteriskTrunkASRCollapsed fires for a carrier with "
        f"{ASR_MIN_CALLS} calls in 15 minutes on one server."
    ),
    "NER per carrier": (
        "Network effectiveness ratio per carrier: the outbound calls the network delivered to "
        "the far end or that the caller ended (answered, busy, no answer, rejected, cancelled) "
        "among all outbound trunk calls; congestion, unallocated and failed are the network's "
        "failures (ITU-T E.411; RFC 6076's SEER). A drop of NER with ASR is the carrier; a drop "
        "of ASR alone is the called parties (the list). Against 1 week earlier (grey, dashed)."
    ),
    "Outbound call outcomes": (
        "Outbound trunk calls of the selected carriers by outcome, stacked to 100 %: answered "
        "green, busy yellow, no answer blue, congestion red, unallocated orange, rejected "
        "purple, cancelled grey, failed dark red (asterisk_trunk_calls_total, the outcome from "
        "the Hangup cause)."
    ),
    "Carrier calls per minute": (
        "Trunk calls ended per minute per carrier and direction (asterisk_trunk_calls_total): "
        "the volume behind the ratios. The busiest carriers of the time range."
    ),
    "SIP responses per minute": (
        "SIP responses that ended trunk calls, per minute, by carrier and code (Hangup "
        "TechCause, asterisk_trunk_sip_responses_total; Asterisk 22.7+/20.17+ with chan_pjsip "
        "only: chan_sip sends none). The 10 carrier and code pairs most frequent over the time "
        "range."
    ),
    "SIP responses over the time range": (
        "SIP responses that ended trunk calls in the dashboard's time range by carrier and code "
        "(increase of asterisk_trunk_sip_responses_total over $__range), most frequent first: "
        "503 the carrier is overloaded or refuses, 404 and 484 the number, 403 authentication "
        "or caller ID, 486 and 600 busy, 480 and 408 no answer, 603 declined."
    ),
    "Active channels per carrier": (
        "Live channels per carrier and direction (asterisk_trunk_active_channels; servers whose "
        "AMI is down left out): the capacity in use against the carrier's channel limit."
    ),
    "Post-dial delay distribution": (
        "Outbound trunk calls per second by post-dial delay bucket "
        "(asterisk_trunk_post_dial_delay_seconds: channel creation to the first ringing, "
        "progress or answer, from the events' Timestamp where Asterisk sends it)."
    ),
    "Post-dial delay p50 and p95 per carrier": (
        "Median and 95th percentile of the post-dial delay per carrier, from the histogram's "
        f"buckets. Dashed: {PDD_P95_MAX:g} s, above which (p95 over 5 minutes, for 10 minutes) "
        "AsteriskTrunkPostDialDelayHigh fires."
    ),
    "Average call duration (ACD) per carrier": (
        "Mean answered call duration (answer to hangup) per carrier and direction "
        "(asterisk_trunk_answered_duration_seconds sum / count): very short calls on one "
        "carrier mean dropped calls or one-way audio."
    ),
    # Call quality
    "RTP loss p95 per carrier and stream": (
        "95th percentile of the RTP packet loss per RTCP report block "
        "(asterisk_trunk_rtp_loss_ratio: FractionLost / 256) per carrier and stream: received, "
        "Asterisk's measure of the audio it receives (what agents hear); sent, the carrier's "
        f"report on the audio Asterisk sends (what customers hear). Dashed: {pct(LOSS_NOTICEABLE)} "
        f"(noticeable) and {pct(LOSS_P95_MAX)}, above which AsteriskTrunkRTPLossHigh fires."
    ),
    "RTP jitter p95 per carrier and stream": (
        "95th percentile of the RTP interarrival jitter per RTCP report block "
        "(asterisk_trunk_rtp_jitter_seconds) per carrier and stream. Dashed: "
        f"{JITTER_P95_MAX * 1000:g} ms, above which AsteriskTrunkRTPJitterHigh fires."
    ),
    "MES p5 and median per carrier and stream": (
        "The 5th percentile (the worst reports) and the median of Asterisk's media experience "
        "score (asterisk_trunk_rtp_media_experience_score, 0 to 100, from loss, jitter and "
        "round trip, where Asterisk reports it) per carrier and stream. Bands: green from 80, "
        f"yellow from 70, orange from {MES_P5_MIN:g}, red under {MES_P5_MIN:g}, where "
        "AsteriskTrunkMediaExperienceLow fires (p5 over 5 minutes, for 10 minutes)."
    ),
    "RTCP round trip p50 and p95 per carrier": (
        "Median and 95th percentile of the RTCP round trip per carrier "
        "(asterisk_trunk_rtp_rtt_seconds, from the carrier's receiver reports): above about "
        "300 ms (150 ms each way, ITU-T G.114) callers start to talk over each other."
    ),
    "RTP loss distribution": (
        "RTCP report blocks per second by loss bucket, both streams of the selected carriers "
        "(asterisk_trunk_rtp_loss_ratio): a few bad calls show as a separate band."
    ),
    "RTP jitter distribution": (
        "RTCP report blocks per second by jitter bucket, both streams of the selected carriers "
        "(asterisk_trunk_rtp_jitter_seconds)."
    ),
    "MES distribution": (
        "RTCP report blocks per second by media experience score bucket, both streams of the "
        "selected carriers (asterisk_trunk_rtp_media_experience_score)."
    ),
    # Trunk reachability
    "Trunks up": (
        f"Trunks reachable or registered (asterisk_peer_up 1). {_TRUNK_NOTE} Only the peers "
        "selected by the per-server peers_include/peers_exclude regexes are exported."
    ),
    "Registrations up": (
        "Outbound registrations (register => / PJSIP outbound registrations) Registered now."
    ),
    "Peers reachable": (
        "Every tracked peer or endpoint, selected or not (asterisk_peers: agent phones and "
        "extensions included, which get no per-peer series), reachable, lagged or registered: "
        "it follows the agents' shifts."
    ),
    "Trunk round trip": (
        f"Qualify round trip per trunk (asterisk_peer_rtt_seconds), where Asterisk reports one: "
        f"a rising time precedes LAGGED and UNREACHABLE. {_TRUNK_NOTE}"
    ),
    "Trunk reachability": (
        "asterisk_peer_up per trunk: UP reachable or registered, DOWN not. From PeerStatus and "
        "ContactStatus events and the SIPpeers, IAXpeerlist and PJSIPShowContacts polls at "
        f"every resync. {_TRUNK_NOTE}"
    ),
    "Registrations": (
        "asterisk_registration_up per outbound registration: UP Registered, DOWN not (Rejected, "
        "Timeout, Unregistered...)."
    ),
    "Trunk status changes per minute": (
        "Status changes per minute of each trunk (asterisk_peer_status_changes_total) and of all "
        "peers by new status (asterisk_peers_status_changes_total): a flapping trunk shows as "
        "a steady rate."
    ),
    # AMI health
    "Login failures per minute": (
        "AMI login failures per minute by reason (asterisk_ami_login_failures_total): auth is "
        "'Authentication failed' (wrong user or secret, or the permit/deny ACL). Any of them "
        "means the dialer's AMI setup is broken (AsteriskAMILoginFailures)."
    ),
    "Connection errors per minute": (
        "AMI connection failures before login per minute by reason "
        "(asterisk_ami_connection_errors_total): refused, timeout, unreachable, tls, other."
    ),
    "Disconnects per minute": (
        "AMI sessions lost after login per minute by reason (asterisk_ami_disconnects_total): "
        "eof, shutdown, ping_timeout, error. AsteriskAMIFlapping fires at 3 in 15 minutes."
    ),
    "Reconnects per minute": (
        "AMI TCP connection attempts per minute (asterisk_ami_connection_attempts_total): one "
        "per session, so a steady rate means the exporter keeps reconnecting."
    ),
    "Age of the last AMI message": (
        "Seconds since the last AMI message from each server (time() - "
        "asterisk_ami_last_event_timestamp_seconds). Ping answers count, so it stays below the "
        "ping interval while the session is up (dashed: 30 s and 60 s)."
    ),
    "Ping round trip": (
        "Round trip of the last AMI Ping per server (asterisk_ami_ping_rtt_seconds): a slow or "
        "overloaded Asterisk answers late."
    ),
    "Events per second by type": (
        "AMI events received per second, the 15 most frequent names of each server (rate of "
        "asterisk_ami_events_total)."
    ),
    "Malformed messages per minute": (
        "AMI messages skipped as malformed per minute (asterisk_ami_malformed_messages_total): "
        "bad framing, no key, over 1 MiB. Should stay at 0."
    ),
    "Resync corrections per minute": (
        "Channels the periodic CoreShowChannels resync corrected, per minute: removed, tracked "
        "channels that were gone (Hangup missed); added, live channels that were untracked "
        "(Newchannel missed). Non-zero outside reconnects means lost events."
    ),
    # Security
    "Security events by type and service": (
        "Asterisk security events per second by service (AMI, PJSIP...) and event (rate of "
        "asterisk_security_events_total; needs read=security for the AMI user)."
    ),
    "Failed authentications per minute": (
        "InvalidPassword, InvalidAccountID, ChallengeResponseFailed and FailedACL events per "
        "minute, by server and service. AsteriskSecurityBruteForce fires at 20 "
        "InvalidPassword or InvalidAccountID in 5 minutes."
    ),
    # Queues and service level
    f"Service level (answered within {SERVICE_LEVEL_SECONDS:.0f} s)": (
        "Share of the callers leaving each queue (answered or abandoned) who were answered "
        f"within {SERVICE_LEVEL_SECONDS:.0f} s, from the asterisk_queue_wait_seconds histogram "
        "(answered: AgentConnect HoldTime; abandoned: QueueCallerAbandon HoldTime). Dashed: "
        f"{pct(SERVICE_LEVEL_GOAL)}, under which AsteriskQueueServiceLevelMissed fires (over 15 "
        "minutes, with 20 callers, for 15 minutes)."
    ),
    "Abandoned share": (
        "Share of the callers leaving each queue who hung up before an agent answered "
        "(asterisk_queue_wait_seconds_count, outcome abandoned)."
    ),
    "Queue wait p90 by outcome": (
        "90th percentile of the wait in each queue, of the callers answered (time to answer) "
        "and of those who abandoned (patience), from asterisk_queue_wait_seconds."
    ),
    "Callers leaving per minute by outcome": (
        "Callers leaving each queue per minute, answered or abandoned "
        "(asterisk_queue_wait_seconds_count): live, from the AgentConnect and "
        "QueueCallerAbandon events."
    ),
    "Talk time median and mean": (
        "Median and mean talk time of the queue calls that ended (asterisk_queue_talk_seconds, "
        "AgentComplete TalkTime)."
    ),
    "Queue callers waiting": (
        "Callers waiting per app_queue queue (asterisk_queue_callers, QueueStatus polled at "
        "every resync on servers with queues: true; servers whose AMI is down left out)."
    ),
    "Longest hold": (
        "Wait of the caller waiting longest in each queue "
        f"(asterisk_queue_longest_hold_seconds); dashed: {QUEUE_HOLD:.0f} s, where "
        "AsteriskQueueCallersWaitingTooLong fires."
    ),
    "Queue members by status": (
        "Queue members by device status and paused (asterisk_queue_members): not_in_use and not "
        "paused are the agents free to take a call."
    ),
    "Completed and abandoned calls per minute": (
        "Calls completed and abandoned per minute per queue, from app_queue's own counters "
        "(asterisk_queue_completed_total, asterisk_queue_abandoned_total)."
    ),
    # Exporter
    "Exporter targets": (
        "Prometheus' view of the exporter targets (up: UP scraped, DOWN unreachable) per "
        "instance; a lane's link opens that exporter's status page."
    ),
    "Scrape duration": (
        "How long Prometheus takes to scrape each exporter (scrape_duration_seconds). The "
        "exporter builds metrics from memory, so this stays in the milliseconds."
    ),
    "Exporter versions": (
        "ami-exporter and Python version per exporter instance (ami_exporter_build_info): "
        "a cluster halfway through an upgrade shows two versions."
    ),
    "Asterisk versions": (
        "Asterisk and AMI version and system name per server (asterisk_info, from the AMI "
        "banner and CoreSettings)."
    ),
}


# -- rows ----------------------------------------------------------------------------------


@dataclass
class Row:
    """A dashboard row and its panels, placed left to right, wrapping at the grid's width."""

    title: str
    collapsed: bool = True
    cells: list[tuple[int, int, PanelBuilder]] = field(default_factory=list)

    def add(self, width: int, height: int, builder: PanelBuilder) -> Self:
        self.cells.append((width, height, builder))
        return self


def status_row() -> Row:
    """Problem counts, red from 1 (Node Exporter Full's quick row; snmp-fleet's alerts)."""
    servers = f"max by ({BY_SERVER}) ({sel('asterisk_ami_up')}) or {seen(BY_SERVER)}"
    trunks = latest("asterisk_peer_up", f"{BY_SERVER}, tech, peer", TRUNKS)
    registrations = latest("asterisk_registration_up", f"{BY_SERVER}, tech, registration")
    logins = f"sum by ({BY_SERVER}) ({increase('asterisk_ami_login_failures_total')})"
    targets = sel("up", scope=TARGETS)
    login = count("Servers with login failures", f"count({logins} > 0) or vector(0)")
    warnings = f"count({firing(WARNING)}) or vector(0)"
    calls = [
        Q(f"sum({live('asterisk_active_calls')})", "now", instant=True),
        Q(f"sum({live('asterisk_active_calls', offset='1w')})", "a week ago", instant=True),
    ]
    week = (
        panel(stat.Panel(), "Calls now and a week ago", units.Short, calls)
        .thresholds(steps("blue"))
        .color_mode(common.BigValueColorMode.VALUE)
        .graph_mode(common.BigValueGraphMode.NONE)
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .no_value(NO_DATA)
    )
    up = [Q(latest("asterisk_ami_up"), "{{server}}")]
    return (
        Row("Cluster status", collapsed=False)
        .add(3, 4, count("Servers without AMI", f"count(({servers}) == 0) or vector(0)"))
        .add(3, 4, count("Exporter targets down", f"count({targets} == 0) or vector(0)"))
        .add(3, 4, count("Trunks down", f"count({trunks} == 0) or vector(0)"))
        .add(3, 4, count("Registrations down", f"count({registrations} == 0) or vector(0)"))
        .add(3, 4, login.time_from(LOGIN_WINDOW))  # $__range is the alert's window
        .add(3, 4, count("Critical alerts firing", f"count({firing(CRITICAL)}) or vector(0)"))
        .add(3, 4, count("Warning alerts firing", warnings, warn="orange"))
        .add(3, 4, week)
        .add(24, 20, fleet_table())
        .add(24, 9, timeline("AMI up over time", up))
    )


@dataclass(frozen=True)
class Column:
    """A column of the Servers table: an instant query by server, a unit, its colours."""

    name: str
    expr: str
    unit: str
    thresholds: db.ThresholdsConfig | None = None
    background: bool = False  # colour the cell, else (thresholded) the text
    mappings: list[dm.ValueMapping] = field(default_factory=list)


def fleet_columns() -> list[Column]:
    red_from_1 = steps("green", (1, "red"))
    trunk = latest("asterisk_peer_up", f"{BY_SERVER}, tech, peer", TRUNKS)
    registration = latest("asterisk_registration_up", f"{BY_SERVER}, tech, registration")
    originates = rate("asterisk_originates_total")
    hangups = rate("asterisk_hangups_total", NOT_CAUSE_0)
    congestion = rate("asterisk_hangups_total", cause_in(CONGESTION_CAUSES))
    success = ratio(rate("asterisk_originates_total", SUCCESS), originates)
    logins = f"sum by (server) ({increase('asterisk_ami_login_failures_total')})"
    alerts = f"count by (server) ({firing(THIS_SERVER)}) or {seen()}"
    ami = f"{latest('asterisk_ami_up')} or {seen()}"
    calls = f"sum by (server) ({live('asterisk_active_calls')})"
    created = f"sum by (server) ({rate('asterisk_channels_created_total')})"
    restarts = f"sum by (server) ({increase('asterisk_restarts_total')})"
    s, pu = units.Seconds, units.PercentUnit
    return [
        Column("Alerts", alerts, units.Short, red_from_1, background=True),
        Column("AMI", ami, units.NoUnit, steps("red", (1, "green")), True, UP_DOWN),
        Column("Uptime", age("asterisk_core_startup_timestamp_seconds"), s, restarted("orange")),
        Column(
            "Since reload", age("asterisk_core_reload_timestamp_seconds"), s, restarted("yellow")
        ),
        Column(
            "Restarts",
            restarts,
            units.Short,
            steps("text", (1, "orange"), (RESTARTS_PER_HOUR, "red")),
            True,
        ),
        Column("Calls", calls, units.Short),
        Column("Channels/s", created, units.OpsPerSecond),
        Column("Originate success", success + NOT_NAN, pu, steps("red", (ORIGINATE_FLOOR, "text"))),
        Column("Congestion share", ratio(congestion, hangups) + NOT_NAN, pu, congested()),
        Column("Trunks down", f"sum by (server) (1 - {trunk})", units.Short, red_from_1, True),
        Column(
            "Registrations down",
            f"sum by (server) (1 - {registration})",
            units.Short,
            red_from_1,
            True,
        ),
        Column("Login failures", logins, units.Short, red_from_1, background=True),
        Column("Last message", age("asterisk_ami_last_event_timestamp_seconds"), s, stalled()),
        Column("Ping", latest("asterisk_ami_ping_rtt_seconds"), units.Seconds),
    ]


NOT_NAN: Final = " >= 0"  # 0/0 (no originate, no hangup): an empty cell, not NaN


def restarted(colour: str) -> db.ThresholdsConfig:
    return steps(colour, (RESTART_SECONDS, "text"))


def congested() -> db.ThresholdsConfig:
    return steps("text", (CONGESTION_SHARE, "red"))


def stalled() -> db.ThresholdsConfig:
    return steps("text", (30, "orange"), (60, "red"))


def column_properties(c: Column) -> list[dm.DynamicConfigValue]:
    properties = [dm.DynamicConfigValue(id_val="unit", value=c.unit)]
    if c.unit == units.Short:
        properties.append(dm.DynamicConfigValue(id_val="decimals", value=0))
    if c.thresholds is not None:
        cell: object = (
            common.TableColoredBackgroundCellOptions()
            if c.background
            else common.TableColorTextCellOptions()
        )
        colour = dm.FieldColor(mode=dm.FieldColorModeId.THRESHOLDS)
        properties += [
            dm.DynamicConfigValue(id_val="thresholds", value=c.thresholds.build()),
            dm.DynamicConfigValue(id_val="color", value=colour),
            dm.DynamicConfigValue(id_val="custom.cellOptions", value=cell),
        ]
    if c.mappings:
        properties.append(dm.DynamicConfigValue(id_val="mappings", value=c.mappings))
    return properties


def fleet_table() -> table.Panel:
    """One row per server from instant queries, merged (snmp-fleet's "Network devices")."""
    columns = fleet_columns()
    queries = [Q(c.expr, instant=True, fmt=PromQueryFormat.TABLE) for c in columns]
    names = [c.name for c in columns]
    rename = {f"Value #{chr(ord('A') + i)}": name for i, name in enumerate(names)}
    drilldown = DataLink(
        "This dashboard for ${__data.fields.server}",
        f"/d/{UID}?var-server=${{__data.fields.server}}&${{job:queryparam}}"
        "&${instance:queryparam}&${__url_time_range}&${datasource:queryparam}",
    )
    server = [dm.DynamicConfigValue(id_val="displayName", value="Server"), data_links(drilldown)]
    builder = (
        grid("Servers", units.Short, queries)
        .interval("10m")
        .with_transformation(dm.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(organize(["Time"], ["server", *names], rename))
        .sort_by([cb.TableSortByFieldState().display_name("Alerts").desc(True)])
        .override_by_name("server", server)
    )
    for c in columns:
        builder = builder.override_by_name(c.name, column_properties(c))
    return builder


PERIODS: Final = (("", "now"), ("1d", "1 day ago"), ("1w", "1 week ago"))
EARLIER: Final = ("1 day ago", "1 week ago")


def calls_row() -> Row:
    """A slim open row: the call volume against yesterday and last week, and call success."""
    dials = "asterisk_dials_total"
    active = [Q(f"sum({live('asterisk_active_calls', offset=o)})", n) for o, n in PERIODS]
    created = [
        Q(f"sum({rate('asterisk_channels_created_total', offset=o)})", n) for o, n in PERIODS
    ]
    asr_ner = [
        Q(ratio(rate(dials, ok, offset=o), rate(dials, DIAL_ATTEMPTS, offset=o), by=""), f"{n} {p}")
        for n, ok in (("ASR", 'status="answer"'), ("NER", DIAL_COMPLETED))
        for o, p in (PERIODS[0], PERIODS[2])
    ]
    success = ratio(rate("asterisk_originates_total", SUCCESS), rate("asterisk_originates_total"))
    calls = graph("Active calls", units.Short, active).min(0)
    volume = graph("Channels created", units.OpsPerSecond, created).min(0)
    originates = graph("Originate success ratio", units.PercentUnit, [Q(success, "{{server}}")])
    asr = graph("ASR and NER", units.PercentUnit, asr_ner).min(0).max(1)
    asr = compared(dashed_at(asr, "red", (NER_FLOOR, "green")), "ASR 1 week ago", "NER 1 week ago")
    return (
        Row("Calls", collapsed=False)
        .add(6, 8, compared(calls, *EARLIER))
        .add(6, 8, compared(volume, *EARLIER))
        .add(6, 8, dashed_at(originates.min(0).max(1), "red", (ORIGINATE_FLOOR, "green")))
        .add(6, 8, asr)
    )


DIAL_COLOURS: Final = {
    "answer": "green",
    "busy": "yellow",
    "noanswer": "blue",
    "congestion": "red",
    "chanunavail": "orange",
    "cancel": "purple",
}
CAUSE_GROUPS: Final = (
    (CONGESTION_CAUSES, "congestion/network", "red"),
    ("1|3|28", "bad numbers", "orange"),
    ("21", "rejected", "purple"),
    ("18|19", "no answer", "blue"),
)


def outcomes_row() -> Row:
    hangups = "asterisk_hangups_total"
    top = f"topk(10, sum by (cause) ({increase(hangups, NOT_CAUSE_0, at_end=True)}))"
    top_causes = f"sum by (cause, cause_name) ({rate(hangups, NOT_CAUSE_0)}) and on (cause) {top}"
    shares = [
        Q(f"sum({rate(hangups, cause_in(causes))}) / sum({rate(hangups, NOT_CAUSE_0)})", name)
        for causes, name, _ in CAUSE_GROUPS
    ]
    by_cause = f"sum by (cause, cause_name) ({increase(hangups, NOT_CAUSE_0)})"
    dials = [Q(f"sum by (status) ({rate('asterisk_dials_total')})", "{{status}}")]
    results = [Q(f"sum by (result) ({rate('asterisk_originates_total')})", "{{result}}")]
    reasons = [Q(f"sum by (reason) ({rate('asterisk_originates_total', FAILURE)})", "{{reason}}")]
    causes_doc = doc_link("Q.850 hangup causes (Asterisk)", HANGUP_CAUSES_DOC)
    percent = cb.StackingConfig().mode(common.StackingMode.PERCENT).group("A")
    stacked = cb.StackingConfig().mode(common.StackingMode.NORMAL).group("A")
    outcomes = (
        graph("Dial outcomes by status", units.OpsPerSecond, dials, right=True)
        .stacking(percent)
        .fill_opacity(70)
        .links([doc_link("DIALSTATUS values (Asterisk Dial)", DIAL_DOC)])
    )
    originates = graph("Originate rate", units.OpsPerSecond, results, right=True)
    originates = originates.stacking(stacked).fill_opacity(40)
    failures = graph("Originate failures by reason", units.OpsPerSecond, reasons, right=True)
    share = graph("Share of failure causes", units.PercentUnit, shares, right=True).min(0)
    share = dashed_at(share, "transparent", (CONGESTION_SHARE, "red"))
    top_graph = graph(
        "Top hangup causes",
        units.OpsPerSecond,
        [Q(top_causes, "{{cause}} {{cause_name}}")],
        right=True,
    )
    cause_names = {"cause": "Cause", "cause_name": "Name", "Value": "Hangups"}
    causes = (
        grid("Hangups by cause over the time range", units.Short, [table_query(by_cause)])
        .with_transformation(organize(["Time"], ["cause", "cause_name", "Value"], cause_names))
        .sort_by([cb.TableSortByFieldState().display_name("Hangups").desc(True)])
        .decimals(0)
        .links([causes_doc])
    )
    return (
        Row("Call outcomes")
        .add(12, 8, colours(outcomes, DIAL_COLOURS))
        .add(12, 8, colours(originates, {"success": "green", "failure": "red"}))
        .add(12, 8, failures)
        .add(12, 8, colours(share, {name: colour for _, name, colour in CAUSE_GROUPS}))
        .add(12, 8, top_graph.links([causes_doc]))
        .add(12, 8, causes)
    )


def table_query(expr: str) -> Q:
    return Q(expr, instant=True, fmt=PromQueryFormat.TABLE)


def channels_row() -> Row:
    buckets = f"sum by (le) ({rate('asterisk_channel_duration_seconds_bucket', NOT_LOCAL)})"
    quantiles = [
        Q(f"histogram_quantile({q}, {buckets})", f"p{q * 100:g}") for q in (0.5, 0.9, 0.99)
    ]
    seconds = rate("asterisk_channel_duration_seconds_sum")
    ended = rate("asterisk_channel_duration_seconds_count")
    by_tech = [Q(f"sum by (tech) ({live('asterisk_active_channels')})", "{{tech}}")]
    by_state = [Q(f"sum by (state) ({live('asterisk_active_channels_by_state')})", "{{state}}")]
    colour = heatmap.HeatmapColorOptions().mode(hm.HeatmapColorMode.SCHEME).scheme("Oranges")
    colour = colour.scale(hm.HeatmapColorScale.EXPONENTIAL).exponent(0.5).steps(64)
    histogram = [Q(buckets, "{{le}}", fmt=PromQueryFormat.HEATMAP)]
    distribution = (
        panel(heatmap.Panel(), "Channel duration distribution", units.Short, histogram)
        .calculate(False)
        .y_axis(heatmap.YAxisConfig().unit(units.Seconds))
        .cell_values(heatmap.CellValues().unit(units.OpsPerSecond))
        .color(colour.fill("dark-orange").reverse(False))
        .rows_frame(heatmap.RowsHeatmapOptions().layout(common.HeatmapCellLayout.LE))
        .show_legend()
        .mode(common.TooltipDisplayMode.SINGLE)
        .show_y_histogram()
        .max_data_points(100)
    )
    mean = [Q(ratio(seconds, ended, by="tech"), "{{tech}}")]
    technologies = graph("Active channels by technology", units.Short, by_tech, right=True)
    states = graph("Active channels by state", units.Short, by_state, right=True)
    return (
        Row("Channels")
        .add(12, 8, technologies.min(0))
        .add(12, 8, states.min(0))
        .add(8, 8, distribution)
        .add(8, 8, graph("Channel duration percentiles", units.Seconds, quantiles))
        .add(8, 8, graph("Average channel duration", units.Seconds, mean))
    )


# -- per carrier, call quality, queue service level (issue #11) -----------------------------


def tsel(metric: str, *matchers: str) -> str:
    return sel(metric, *matchers, scope=TRUNK_SCOPE)


def trate(metric: str, *matchers: str, offset: str = "") -> str:
    shift = f" offset {offset}" if offset else ""
    return f"rate({tsel(metric, *matchers)}[$__rate_interval]{shift})"


def busiest(expr: str) -> str:
    """Only the carriers with the most calls over the whole time range (the set is fixed with
    ``@ end()``, so lines do not come and go between steps): at most TOP_CARRIERS lines."""
    calls = f"increase({tsel('asterisk_trunk_calls_total')}[$__range] @ end())"
    return f"({expr}) and on (trunk) topk({TOP_CARRIERS}, sum by (trunk) ({calls}))"


def share_of_calls(matcher: str, by: str, *, offset: str = "") -> str:
    """A share of the outbound trunk calls, 0 (not absent) when none has that outcome."""
    calls = "asterisk_trunk_calls_total"
    total = f"sum by ({by}) ({trate(calls, OUTBOUND, offset=offset)})"
    part = f"sum by ({by}) ({trate(calls, OUTBOUND, matcher, offset=offset)})"
    return f"({part} or 0 * {total}) / ({total} > 0)"


def quantile(q: float, metric: str, by: str, *matchers: str) -> str:
    buckets = f"sum by ({by}, le) ({trate(metric + '_bucket', *matchers)})"
    return f"histogram_quantile({q}, {buckets})"


def mean_of(metric: str, by: str) -> str:
    total = f"sum by ({by}) ({trate(metric + '_sum')})"
    observed = f"sum by ({by}) ({trate(metric + '_count')})"
    return f"{total} / ({observed} > 0)"


def distribution(title: str, metric: str, unit: str, *, scope: str = TRUNK_SCOPE) -> heatmap.Panel:
    """A heatmap of a histogram's buckets (observations per second in each bucket)."""
    buckets = f"sum by (le) (rate({sel(metric + '_bucket', scope=scope)}[$__rate_interval]))"
    colour = heatmap.HeatmapColorOptions().mode(hm.HeatmapColorMode.SCHEME).scheme("Oranges")
    colour = colour.scale(hm.HeatmapColorScale.EXPONENTIAL).exponent(0.5).steps(64)
    return (
        panel(
            heatmap.Panel(), title, units.Short, [Q(buckets, "{{le}}", fmt=PromQueryFormat.HEATMAP)]
        )
        .calculate(False)
        .y_axis(heatmap.YAxisConfig().unit(unit))
        .cell_values(heatmap.CellValues().unit(units.OpsPerSecond))
        .color(colour.fill("dark-orange").reverse(False))
        .rows_frame(heatmap.RowsHeatmapOptions().layout(common.HeatmapCellLayout.LE))
        .show_legend()
        .mode(common.TooltipDisplayMode.SINGLE)
        .show_y_histogram()
        .max_data_points(100)
    )


def week_ago(builder: timeseries.Panel) -> timeseries.Panel:
    """Series whose name ends in "1 week ago" drawn grey and dashed."""
    dashed = common.LineStyle(fill="dash", dash=[10, 10])
    return builder.override_by_regexp(
        ".* 1 week ago$",
        [
            dm.DynamicConfigValue(id_val="color", value=fixed("#8e8e8e")),
            dm.DynamicConfigValue(id_val="custom.lineStyle", value=dashed),
        ],
    )


def carrier_columns() -> list[Column]:
    by = "server, trunk"
    calls = f"sum by ({by}) ({trate('asterisk_trunk_calls_total')}) * 60"
    channels = f"sum by ({by}) ({live('asterisk_trunk_active_channels', scope=TRUNK_SCOPE)})"
    loss = quantile(0.95, "asterisk_trunk_rtp_loss_ratio", f"{by}, stream")
    jitter = quantile(0.95, "asterisk_trunk_rtp_jitter_seconds", f"{by}, stream")
    mes = quantile(0.05, "asterisk_trunk_rtp_media_experience_score", f"{by}, stream")
    # a percentile of buckets that did not move is NaN, which a table cell would print:
    # `>= 0` leaves the cell empty instead (as the recording rules do)
    pdd = f"{quantile(0.95, 'asterisk_trunk_post_dial_delay_seconds', by)} >= 0"
    pu = units.PercentUnit
    return [
        Column("Calls/min", calls, units.Short),
        Column("ASR", share_of_calls(ANSWERED, by), pu, steps("red", (ASR_FLOOR, "text"))),
        Column("NER", share_of_calls(EFFECTIVE, by), pu),
        Column("PDD p95", pdd, units.Seconds, steps("text", (PDD_P95_MAX, "red"))),
        Column("ACD", mean_of("asterisk_trunk_answered_duration_seconds", by), units.Seconds),
        Column("Channels", channels, units.Short),
        Column("Loss p95", f"max by ({by}) ({loss}) >= 0", pu, loss_bands()),
        Column("Jitter p95", f"max by ({by}) ({jitter}) >= 0", units.Seconds, jitter_bands()),
        Column("MES p5", f"min by ({by}) ({mes}) >= 0", units.NoUnit, mes_bands()),
    ]


def loss_bands() -> db.ThresholdsConfig:
    return steps("text", (LOSS_NOTICEABLE, "orange"), (LOSS_P95_MAX, "red"))


def jitter_bands() -> db.ThresholdsConfig:
    return steps("text", (JITTER_P95_MAX, "red"))


def mes_bands() -> db.ThresholdsConfig:
    return steps("red", (MES_P5_MIN, "orange"), (70, "yellow"), (80, "green"))


def carriers_table() -> table.Panel:
    """One row per server and carrier from instant queries, merged (as the Servers table)."""
    columns = carrier_columns()
    queries = [Q(c.expr, instant=True, fmt=PromQueryFormat.TABLE) for c in columns]
    names = [c.name for c in columns]
    rename = {f"Value #{chr(ord('A') + i)}": name for i, name in enumerate(names)}
    rename |= {"server": "Server", "trunk": "Carrier"}
    builder = (
        grid("Carriers", units.Short, queries)
        .interval("10m")
        .with_transformation(dm.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(organize(["Time"], ["server", "trunk", *names], rename))
        .sort_by([cb.TableSortByFieldState().display_name("Calls/min").desc(True)])
    )
    for c in columns:
        builder = builder.override_by_name(c.name, column_properties(c))
    return builder


def carrier_graphs() -> list[tuple[int, int, PanelBuilder]]:
    carrier = "{{trunk}}"
    asr = [
        Q(busiest(share_of_calls(ANSWERED, BY_CARRIER, offset=o)), f"{carrier}{n}")
        for o, n in (("", ""), ("1w", " 1 week ago"))
    ]
    ner = [
        Q(busiest(share_of_calls(EFFECTIVE, BY_CARRIER, offset=o)), f"{carrier}{n}")
        for o, n in (("", ""), ("1w", " 1 week ago"))
    ]
    calls = "asterisk_trunk_calls_total"
    outcomes = [Q(f"sum by (outcome) ({trate(calls, OUTBOUND)})", "{{outcome}}")]
    volume = f"sum by (trunk, direction) ({trate(calls)}) * 60"
    channels = (
        f"sum by (trunk, direction) ({live('asterisk_trunk_active_channels', scope=TRUNK_SCOPE)})"
    )
    both = f"{carrier} {{{{direction}}}}"
    percent = cb.StackingConfig().mode(common.StackingMode.PERCENT).group("A")
    outcome_graph = graph("Outbound call outcomes", units.OpsPerSecond, outcomes, right=True)
    outcome_graph = outcome_graph.stacking(percent).fill_opacity(70)
    asr_graph = graph("ASR per carrier", units.PercentUnit, asr, right=True).min(0).max(1)
    ner_graph = graph("NER per carrier", units.PercentUnit, ner, right=True).min(0).max(1)
    volume_graph = graph("Carrier calls per minute", units.Short, [Q(busiest(volume), both)])
    channels_graph = graph("Active channels per carrier", units.Short, [Q(busiest(channels), both)])
    return [
        (12, 8, week_ago(dashed_at(asr_graph, "red", (ASR_FLOOR, "green")))),
        (12, 8, week_ago(ner_graph)),
        (12, 8, colours(outcome_graph, OUTCOME_COLOURS)),
        (12, 8, volume_graph.legend(legend(right=True)).min(0)),
        *sip_panels(),
        (12, 8, channels_graph.legend(legend(right=True)).min(0)),
        *delay_panels(),
    ]


def sip_panels() -> list[tuple[int, int, PanelBuilder]]:
    metric = "asterisk_trunk_sip_responses_total"
    pinned = f"topk(10, sum by (trunk, code) (increase({tsel(metric)}[$__range] @ end())))"
    top = f"sum by (trunk, code) ({trate(metric)}) * 60 and on (trunk, code) {pinned}"
    over_range = f"sum by (trunk, code) (increase({tsel(metric)}[$__range]))"
    names = {"trunk": "Carrier", "code": "SIP code", "Value": "Responses"}
    doc = doc_link("SIP response codes (IANA)", SIP_CODES_DOC)
    codes = (
        grid("SIP responses over the time range", units.Short, [table_query(over_range)])
        .with_transformation(organize(["Time"], ["trunk", "code", "Value"], names))
        .sort_by([cb.TableSortByFieldState().display_name("Responses").desc(True)])
        .decimals(0)
        .links([doc])
    )
    rates = graph(
        "SIP responses per minute", units.Short, [Q(top, "{{trunk}} {{code}}")], right=True
    )
    return [(12, 8, rates.min(0).links([doc])), (12, 8, codes)]


def delay_panels() -> list[tuple[int, int, PanelBuilder]]:
    pdd = "asterisk_trunk_post_dial_delay_seconds"
    percentiles = [
        Q(busiest(quantile(q, pdd, BY_CARRIER)), f"{{{{trunk}}}} p{q * 100:g}") for q in (0.5, 0.95)
    ]
    acd = mean_of("asterisk_trunk_answered_duration_seconds", "trunk, direction")
    delay = graph("Post-dial delay p50 and p95 per carrier", units.Seconds, percentiles, right=True)
    return [
        (8, 8, distribution("Post-dial delay distribution", pdd, units.Seconds)),
        (8, 8, dashed_at(delay.min(0), "transparent", (PDD_P95_MAX, "red"))),
        (
            8,
            8,
            graph(
                "Average call duration (ACD) per carrier",
                units.Seconds,
                [Q(busiest(acd), "{{trunk}} {{direction}}")],
            ).min(0),
        ),
    ]


def carriers_row() -> Row:
    row = Row("Trunks").add(24, 10, carriers_table())
    for width, height, builder in carrier_graphs():
        row = row.add(width, height, builder)
    return row


def call_quality_row() -> Row:
    by = "trunk, stream"
    legend_of = "{{trunk}} {{stream}}"
    loss_metric = "asterisk_trunk_rtp_loss_ratio"
    jitter_metric = "asterisk_trunk_rtp_jitter_seconds"
    mes_metric = "asterisk_trunk_rtp_media_experience_score"
    rtt_metric = "asterisk_trunk_rtp_rtt_seconds"
    loss = [Q(busiest(quantile(0.95, loss_metric, by)), legend_of)]
    jitter = [Q(busiest(quantile(0.95, jitter_metric, by)), legend_of)]
    mes = [
        Q(busiest(quantile(q, mes_metric, by)), f"{legend_of} {name}")
        for q, name in ((0.05, "p5"), (0.5, "median"))
    ]
    rtt = [
        Q(busiest(quantile(q, rtt_metric, BY_CARRIER)), f"{{{{trunk}}}} p{q * 100:g}")
        for q in (0.5, 0.95)
    ]
    loss_graph = graph("RTP loss p95 per carrier and stream", units.PercentUnit, loss, right=True)
    jitter_graph = graph("RTP jitter p95 per carrier and stream", units.Seconds, jitter, right=True)
    mes_graph = graph("MES p5 and median per carrier and stream", units.NoUnit, mes, right=True)
    rtt_graph = graph("RTCP round trip p50 and p95 per carrier", units.Seconds, rtt, right=True)
    return (
        Row("Call quality")
        .add(
            12,
            8,
            dashed_at(
                loss_graph.min(0), "transparent", (LOSS_NOTICEABLE, "orange"), (LOSS_P95_MAX, "red")
            ),
        )
        .add(12, 8, dashed_at(jitter_graph.min(0), "transparent", (JITTER_P95_MAX, "red")))
        .add(
            12,
            8,
            dashed_at(
                mes_graph.min(0).max(100),
                "red",
                (MES_P5_MIN, "orange"),
                (70, "yellow"),
                (80, "green"),
            ),
        )
        .add(12, 8, rtt_graph.min(0))
        .add(8, 8, distribution("RTP loss distribution", loss_metric, units.PercentUnit))
        .add(8, 8, distribution("RTP jitter distribution", jitter_metric, units.Seconds))
        .add(8, 8, distribution("MES distribution", mes_metric, units.NoUnit))
    )


def service_level_panels() -> list[tuple[int, int, PanelBuilder]]:
    wait = "asterisk_queue_wait_seconds"
    by = "server, queue"
    queue = "{{server}} {{queue}}"
    answered, gone = 'outcome="answered"', 'outcome="abandoned"'
    bucket = f'le="{SERVICE_LEVEL_LE}"'
    left = f"sum by ({by}) ({rate(wait + '_count', LEFT_QUEUE)})"
    within = f"sum by ({by}) ({rate(wait + '_bucket', answered, bucket)})"
    abandoned = f"sum by ({by}) ({rate(wait + '_count', gone)})"
    any_outcome = f"sum by ({by}) ({rate(wait + '_bucket', bucket)})"  # as the recording rule
    level = [Q(f"({within} or 0 * {any_outcome}) / ({left} > 0)", queue)]
    abandons = [Q(f"({abandoned} or 0 * {left}) / ({left} > 0)", queue)]
    buckets = f"sum by (server, queue, outcome, le) ({rate(wait + '_bucket')})"
    waits = [Q(f"histogram_quantile(0.9, {buckets})", queue + " {{outcome}}")]
    leaving = [Q(per_minute(wait + "_count", "server, queue, outcome"), queue + " {{outcome}}")]
    talk = "asterisk_queue_talk_seconds"
    talk_buckets = f"sum by (server, queue, le) ({rate(talk + '_bucket')})"
    talk_mean = ratio(rate(talk + "_sum"), rate(talk + "_count"), by=by)
    talks = [
        Q(f"histogram_quantile(0.5, {talk_buckets})", queue + " median"),
        Q(talk_mean, queue + " mean"),
    ]
    title = f"Service level (answered within {SERVICE_LEVEL_SECONDS:.0f} s)"
    sl = graph(title, units.PercentUnit, level, right=True).min(0).max(1)
    return [
        (12, 8, dashed_at(sl, "red", (SERVICE_LEVEL_GOAL, "green"))),
        (12, 8, graph("Abandoned share", units.PercentUnit, abandons, right=True).min(0).max(1)),
        (12, 8, graph("Queue wait p90 by outcome", units.Seconds, waits, right=True).min(0)),
        (
            12,
            8,
            graph("Callers leaving per minute by outcome", units.Short, leaving, right=True).min(0),
        ),
        (12, 8, graph("Talk time median and mean", units.Seconds, talks, right=True).min(0)),
    ]


def trunks_row() -> Row:
    by_peer = f"{BY_SERVER}, tech, peer"
    trunk = latest("asterisk_peer_up", by_peer, TRUNKS)
    up_now = 'status=~"reachable|lagged|registered"'
    peers_up = f"sum by ({BY_SERVER}) ({sel('asterisk_peers', up_now)})"
    registration = latest("asterisk_registration_up", f"{BY_SERVER}, tech, registration")
    peer = "{{server}} {{tech}}/{{peer}}"
    rtt = [Q(latest("asterisk_peer_rtt_seconds", "server, tech, peer", TRUNKS), peer)]
    reachability = [Q(latest("asterisk_peer_up", "server, tech, peer", TRUNKS), peer)]
    registered = latest("asterisk_registration_up", "server, tech, registration")
    registrations = [Q(registered, "{{server}} {{tech}} {{registration}}")]
    changes = per_minute("asterisk_peer_status_changes_total", "server, tech, peer", TRUNKS)
    by_status = per_minute("asterisk_peers_status_changes_total", "server, tech, status")
    flapping = [Q(changes, peer), Q(by_status, "{{server}} all {{tech}} {{status}}")]
    return (
        Row("Trunk reachability")
        .add(4, 8, neutral("Trunks up", f"count({trunk} == 1) or vector(0)"))
        .add(4, 8, neutral("Registrations up", f"count({registration} == 1) or vector(0)"))
        .add(4, 8, neutral("Peers reachable", f"sum({peers_up}) or vector(0)"))
        .add(12, 8, graph("Trunk round trip", units.Seconds, rtt, right=True))
        .add(12, 10, timeline("Trunk reachability", reachability))
        .add(12, 10, timeline("Registrations", registrations))
        .add(24, 8, graph("Trunk status changes per minute", units.Short, flapping, right=True))
    )


def ami_row() -> Row:
    events = f"topk by (server) (15, sum by (server, event) ({rate('asterisk_ami_events_total')}))"

    def by_reason(metric: str) -> list[Q]:
        return [Q(per_minute(metric, "server, reason"), "{{server}} {{reason}}")]

    def by_server(expr: str) -> list[Q]:
        return [Q(expr, "{{server}}")]

    removed = per_minute("asterisk_ami_resync_channels_removed_total", "server")
    added = per_minute("asterisk_ami_resync_channels_added_total", "server")
    resync = [Q(removed, "{{server}} removed"), Q(added, "{{server}} added")]
    attempts = by_server(per_minute("asterisk_ami_connection_attempts_total", "server"))
    last = by_server(age("asterisk_ami_last_event_timestamp_seconds"))
    malformed = by_server(per_minute("asterisk_ami_malformed_messages_total", "server"))
    silence = graph("Age of the last AMI message", units.Seconds, last).min(0)
    ping = by_server(latest("asterisk_ami_ping_rtt_seconds"))
    logins = by_reason("asterisk_ami_login_failures_total")
    errors = by_reason("asterisk_ami_connection_errors_total")
    drops = by_reason("asterisk_ami_disconnects_total")
    types = [Q(events, "{{server}} {{event}}")]
    return (
        Row("AMI health")
        .add(8, 8, graph("Login failures per minute", units.Short, logins))
        .add(8, 8, graph("Connection errors per minute", units.Short, errors))
        .add(8, 8, graph("Disconnects per minute", units.Short, drops))
        .add(8, 8, graph("Reconnects per minute", units.Short, attempts))
        .add(8, 8, dashed_at(silence, "transparent", (30, "orange"), (60, "red")))
        .add(8, 8, graph("Ping round trip", units.Seconds, ping))
        .add(12, 8, graph("Events per second by type", units.OpsPerSecond, types, right=True))
        .add(6, 8, graph("Malformed messages per minute", units.Short, malformed))
        .add(6, 8, graph("Resync corrections per minute", units.Short, resync))
    )


def security_row() -> Row:
    events = f"sum by (server, service, event) ({rate('asterisk_security_events_total')})"
    failed = per_minute("asterisk_security_events_total", "server, service", FAILED_AUTH)
    by_event = [Q(events, "{{server}} {{service}} {{event}}")]
    by_service = [Q(failed, "{{server}} {{service}}")]
    return (
        Row("Security")
        .add(
            12,
            8,
            graph("Security events by type and service", units.OpsPerSecond, by_event, right=True),
        )
        .add(12, 8, graph("Failed authentications per minute", units.Short, by_service, right=True))
    )


def queues_row() -> Row:
    queue = "{{server}} {{queue}}"
    callers = [Q(f"max by (server, queue) ({live('asterisk_queue_callers')})", queue)]
    hold = [Q(f"max by (server, queue) ({live('asterisk_queue_longest_hold_seconds')})", queue)]
    members = f"sum by (server, queue, status, paused) ({live('asterisk_queue_members')})"
    by_status = [Q(members, queue + " {{status}} paused={{paused}}")]
    done = [
        Q(per_minute("asterisk_queue_completed_total", "server, queue"), f"{queue} completed"),
        Q(per_minute("asterisk_queue_abandoned_total", "server, queue"), f"{queue} abandoned"),
    ]
    longest = graph("Longest hold", units.Seconds, hold, right=True).min(0)
    waiting = graph("Queue callers waiting", units.Short, callers, right=True)
    agents = graph("Queue members by status", units.Short, by_status, right=True)
    calls = graph("Completed and abandoned calls per minute", units.Short, done, right=True)
    row = Row("Queues and service level")
    for width, height, builder in service_level_panels():
        row = row.add(width, height, builder)
    return (
        row.add(12, 8, waiting.min(0))
        .add(12, 8, dashed_at(longest, "transparent", (QUEUE_HOLD, "red")))
        .add(12, 8, agents.min(0))
        .add(12, 8, calls)
    )


def exporter_row() -> Row:
    info = latest("asterisk_info", "server, version, ami_version, system_name")
    up = [Q(f"max by (instance) ({sel('up', scope=TARGETS)})", "{{instance}}")]
    took = f"max by (instance) ({sel('scrape_duration_seconds', scope=TARGETS)})"
    order = ["server", "version", "ami_version", "system_name"]
    names = dict(zip(order, ["Server", "Asterisk", "AMI", "System name"], strict=True))
    versions = (
        grid("Asterisk versions", units.NoUnit, [table_query(info)])
        .with_transformation(organize(["Time", "Value"], order, names))
        .sort_by([cb.TableSortByFieldState().display_name("Server").desc(False)])
    )
    build = f"max by (instance, version, python_version) ({sel(BUILD_INFO, scope=TARGETS)})"
    exporters = (
        grid("Exporter versions", units.NoUnit, [table_query(build)])
        .with_transformation(
            organize(
                ["Time", "Value"],
                ["instance", "version", "python_version"],
                {"instance": "Exporter", "version": "ami-exporter", "python_version": "Python"},
            )
        )
        .sort_by([cb.TableSortByFieldState().display_name("Exporter").desc(False)])
    )
    status_page = [data_links(STATUS_PAGE)]
    targets = timeline("Exporter targets", up).override_by_field_type("number", status_page)
    scrape = graph("Scrape duration", units.Seconds, [Q(took, "{{instance}}")])
    return (
        Row("Exporter")
        .add(12, 8, targets)
        .add(12, 8, scrape.override_by_field_type("number", status_page))
        .add(16, 8, versions)
        .add(8, 8, exporters)
    )


ROWS: Final = (
    status_row,
    calls_row,
    carriers_row,
    call_quality_row,
    outcomes_row,
    channels_row,
    trunks_row,
    queues_row,
    ami_row,
    security_row,
    exporter_row,
)
GRID_WIDTH: Final = 24


def place(dashboard: db.Dashboard, rows: Sequence[Row]) -> db.Dashboard:
    """Ids in document order and every position, as Grafana saves them: a collapsed row keeps
    its panels inside it, placed as if it were open, and the next row starts right below."""
    next_id, y = 1, 0
    for row in rows:
        header = db.Row(row.title).id(next_id).collapsed(row.collapsed)
        header = header.grid_pos(dm.GridPos(h=1, w=GRID_WIDTH, x=0, y=y))
        next_id += 1
        x, top, line = 0, y + 1, 0
        panels = []
        for width, height, builder in row.cells:
            if x + width > GRID_WIDTH:
                x, top, line = 0, top + line, 0
            model = builder.build()
            model.id_val = next_id
            model.grid_pos = dm.GridPos(h=height, w=width, x=x, y=top)
            panels.append(Built(model))
            next_id += 1
            x, line = x + width, max(line, height)
        if row.collapsed:
            for built in panels:
                header = header.with_panel(built)
            dashboard = dashboard.with_row(header)
            y += 1
        else:
            dashboard = dashboard.with_row(header)
            for built in panels:
                dashboard = dashboard.with_panel(built)
            y = top + line
    return dashboard


# -- variables, annotations, links, the dashboard ------------------------------------------

ALERTS_PAGE: Final = "http://localhost:9090/alerts"  # examples/docker-compose.yml's Prometheus


def query_variable(name: str, label: str, description: str, query: str) -> Built[dm.VariableModel]:
    """A multi-select label_values variable with All (as ``.+``), refreshed with the time."""
    editor = {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1}
    builder = (
        db.QueryVariable(name)
        .label(label)
        .description(description)
        .datasource(DS)
        .query(editor)
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".+")
        .regex("")
        .hide(dm.VariableHide.DONT_HIDE)
        .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )
    return Variable.of(builder, definition=query)


def variables() -> list[Built[dm.VariableModel]]:
    datasource = (
        db.DatasourceVariable("datasource")
        .label("Data source")
        .description("The Prometheus that scrapes ami-exporter.")
        .type("prometheus")
        .hide(dm.VariableHide.DONT_HIDE)
    )
    alerts_url = (
        db.TextBoxVariable("alerts_url")
        .label("Alerts page")
        .description(
            "The page the Alerts link opens: Prometheus' /alerts or Alertmanager. Set it in the "
            "dashboard's settings (Variables) or with ?var-alerts_url= in the URL."
        )
        .default_value(ALERTS_PAGE)
        .current(dm.VariableOption(selected=False, text=ALERTS_PAGE, value=ALERTS_PAGE))
        .hide(dm.VariableHide.HIDE_VARIABLE)
    )
    job = "label_values(asterisk_ami_up, job)"
    instance = 'label_values(asterisk_ami_up{job=~"$job"}, instance)'
    server = 'label_values(asterisk_ami_up{job=~"$job", instance=~"$instance"}, server)'
    trunk = f"label_values(asterisk_trunk_calls_total{{{SCOPE}}}, trunk)"
    return [
        Variable.of(datasource),
        query_variable("job", "Job", "Scrape job(s) of the exporter.", job),
        query_variable("instance", "Instance", "Exporter instance(s).", instance),
        query_variable("server", "Server", "Asterisk server(s): the exporter's label.", server),
        query_variable(
            "trunk",
            "Carrier",
            "Carrier(s): the trunk label of the per-carrier panels (Trunks, Call quality).",
            trunk,
        ),
        Variable.of(alerts_url),
    ]


def annotation_queries() -> list[cogbuilder.Builder[dm.AnnotationQuery]]:
    """Grafana's own, Asterisk restarts and reloads, firing alerts (critical, warning)."""
    builtin = (
        db.AnnotationQuery()
        .name("Annotations & Alerts")
        .datasource(dm.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
        .enable(True)
        .hide(True)
        .icon_color("rgba(0, 211, 255, 1)")
        .type("dashboard")
        .built_in(1)
    )

    def prom(name: str, colour: str, expr: str, *, enable: bool = True) -> db.AnnotationQuery:
        query = db.AnnotationQuery().name(name).datasource(DS).enable(enable).hide(False)
        return query.icon_color(colour).expr(expr)

    def at(metric: str) -> str:  # a timestamp gauge, as an event at that time (windows-mixin)
        return f"{latest(metric)} * 1000 > $__from < $__to"

    started = prom("Asterisk restarts", "orange", at("asterisk_core_startup_timestamp_seconds"))
    reloaded = prom(
        "Configuration reloads", "blue", at("asterisk_core_reload_timestamp_seconds"), enable=False
    )
    by_server = "{{server}}"
    models: list[dm.AnnotationQuery] = [
        PromAnnotation(
            started, PromFields("Asterisk started", by_server, "server", value_is_time=True)
        ),
        PromAnnotation(
            reloaded, PromFields("Configuration reloaded", by_server, "server", value_is_time=True)
        ),
    ]
    for severity, colour in (("critical", "red"), ("warning", "yellow")):
        query = prom(f"{severity.capitalize()} alerts", colour, firing(f'severity="{severity}"'))
        fields = PromFields("{{alertname}}", "{{server}} {{instance}}", "alertname,server")
        models.append(PromAnnotation(query, fields))
    return [builtin, *(Built(m) for m in models)]


def links() -> list[db.DashboardLink]:
    related = (
        db.DashboardLink("Asterisk dashboards")
        .type(dm.DashboardLinkType.DASHBOARDS)
        .tags(["asterisk"])
        .as_dropdown(True)
        .keep_time(True)
        .include_vars(True)
        .tooltip("Other dashboards tagged asterisk, with this time range and these variables")
    )
    alerts = doc_link("Alerts", "${alerts_url}").icon("bolt").tooltip("The alerts page")
    return [related, alerts]


def build() -> dm.Dashboard:
    dashboard = (
        db.Dashboard("Asterisk (AMI exporter)")
        .uid(UID)
        .description(
            "Asterisk servers through ami-exporter: what is wrong and where first (problem "
            "counts, one row per server), then calls, outcomes and hangup causes, channels, "
            "trunks, AMI session health, security events, queues and the exporter."
        )
        .tags(["asterisk", "ami", "voip", "ami-exporter"])
        .editable()
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .time("now-1h", "now")
        .timezone("")
        .refresh("30s")
        .fiscal_year_start_month(0)
        .live_now(False)
        .week_start("")
        .version(1)
    )
    for variable in variables():
        dashboard = dashboard.with_variable(variable)
    for annotation in annotation_queries():
        dashboard = dashboard.annotation(annotation)
    for item in links():
        dashboard = dashboard.link(item)
    model = place(dashboard, [row() for row in ROWS]).build()
    model.schema_version = SCHEMA_VERSION
    return model


def render() -> str:
    """The dashboard file: keys sorted (as Grafana exports), two-space indent, a newline."""
    return json.dumps(build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def check(path: Path, text: str) -> int:
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    if current == text:
        return 0
    diff = difflib.unified_diff(
        current.splitlines(keepends=True),
        text.splitlines(keepends=True),
        f"{path} (committed)",
        f"{path} (generated)",
    )
    sys.stderr.writelines(list(diff)[:200])
    sys.stderr.write(f"{path} is not up to date: run python3 tools/generate_dashboard.py\n")
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate dashboards/asterisk-ami.json.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if the file is not up to date")
    mode.add_argument("--stdout", action="store_true", help="print the dashboard, write nothing")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="default: %(default)s")
    args = parser.parse_args(argv)
    text = render()
    if args.stdout:
        sys.stdout.write(text)
        return 0
    if args.check:
        return check(args.output, text)
    args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
