"""A Hypothesis state machine of the live-channel aggregates of ``ServerState``.

The rules play an Asterisk: channels (Local ``;1``/``;2`` pairs and single channels, possibly
joining a live call) come and go as Newchannel / Newstate / Hangup events, some of which the
exporter never gets (lost while it was disconnected) or gets late; masquerade leftovers
(``<ZOMBIE>``, ``<MASQ>``) pass by; a resync (CoreShowChannels) begins, takes its snapshot
while events keep flowing, and completes; Asterisk shuts down; time passes.

The test keeps two models: ``world`` (what Asterisk has live) and ``seen`` (what the exporter
must track, by the documented rules: events apply as they come, and a completed resync makes
the tracked set the snapshot's plus what changed since). The invariants compare
``channels_by_tech``, ``channels_by_state``, ``calls`` and ``active_calls`` with a naive recount
of ``state.channels`` and with ``seen``, and the resync and hangup counters with the models.

``AMI_HYPOTHESIS_EXAMPLES`` sets the number of runs (the default keeps it to about a second).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, replace

from helpers import FakeClock, ev
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from ami_exporter.ami.protocol import Message
from ami_exporter.state import labels
from ami_exporter.state.server import ServerState

GRACE = 2.0
TECHS = ("PJSIP", "SIP", "IAX2", "DAHDI")
STATES = ("Down", "Ring", "Ringing", "Up", "Busy", "Dialing Offhook", "Pre-ring", "Unknown")


@dataclass(frozen=True)
class Live:
    channel: str  # the channel name, as in the events
    state: str  # ChannelStateDesc, raw
    call: str  # the call it belongs to: the Linkedid, or what the exporter derives without

    @property
    def tech(self) -> str:
        return labels.channel_tech(self.channel)


class ChannelAggregates(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(1_000.0)
        self.state = ServerState("test", clock=self.clock, resync_grace=GRACE)
        self.legacy = False  # Asterisk 1.8/11: no Linkedid, UniqueID in CoreShowChannel
        self.world: dict[str, Live] = {}
        self.seen: dict[str, Live] = {}
        self.held: dict[str, Message] = {}  # Hangups delayed on their way to the exporter
        self.resyncing = False
        self.snapshot: list[Message] | None = None
        self.pending_ghosts: dict[str, float] = {}  # removed by a resync, grace deadline
        self.created: Counter[str] = Counter()
        self.hangups = 0
        self.added = 0
        self.ghosts = 0
        self.lost = 0  # tracked live when Asterisk shut down
        self.uids = 0

    # ------------------------------------------------------------------ the wire

    def _uid(self) -> str:
        self.uids += 1
        return f"1795771600.{self.uids}"

    def _fields(self, uid: str, live: Live) -> dict[str, str]:
        fields = {"Channel": live.channel, "ChannelStateDesc": live.state, "Uniqueid": uid}
        if not self.legacy:
            fields["Linkedid"] = live.call
        return fields

    def _deliver(self, msg: Message) -> None:
        self.state.handle_event(msg)

    def _created(self, uid: str, live: Live, delivered: bool) -> None:
        self.world[uid] = live
        if delivered:
            self._deliver(ev("Newchannel", **self._fields(uid, live)))
            self.created[live.tech] += 1
            self.seen.setdefault(uid, live)

    # ------------------------------------------------------------------ rules

    @initialize(legacy=st.booleans(), calls=st.integers(0, 6))
    def version_and_calls(self, legacy: bool, calls: int) -> None:
        """The Asterisk version, and the calls up when the exporter connects (a resync learns
        them)."""
        self.legacy = legacy
        for i in range(calls):
            if i % 2:
                self._local_pair("Up", delivered=False)
            else:
                self._single(TECHS[i % len(TECHS)], "Up", None, delivered=False)

    @rule(
        kind=st.sampled_from(("single", "local pair", "masquerade")),
        tech=st.sampled_from(TECHS),
        state=st.sampled_from(STATES),
        delivered=st.booleans(),
        data=st.data(),
    )
    def new_channel(
        self, kind: str, tech: str, state: str, delivered: bool, data: st.DataObject
    ) -> None:
        delivered = delivered or self.resyncing  # nothing is lost while a resync runs
        if kind == "local pair":
            self._local_pair(state, delivered)
        elif kind == "masquerade":
            # 1.8/11 ``<MASQ>`` channels are no calls: never tracked nor counted.
            uid = self._uid()
            noise = Live(f"{tech}/peer-{self.uids:08x}<MASQ>", state, uid)
            self._deliver(ev("Newchannel", **self._fields(uid, noise)))
            self._deliver(ev("Newstate", **self._fields(uid, noise)))
        else:
            call = None
            calls = sorted({live.call for live in self.world.values()})
            if not self.legacy and calls and data.draw(st.booleans(), label="join a call"):
                call = data.draw(st.sampled_from(calls), label="call")  # a live call's Linkedid
            self._single(tech, state, call, delivered)

    def _single(self, tech: str, state: str, call: str | None, delivered: bool) -> None:
        uid = self._uid()
        self._created(uid, Live(f"{tech}/peer-{self.uids:08x}", state, call or uid), delivered)

    def _local_pair(self, state: str, delivered: bool) -> None:
        base = f"Local/100@test-{self.uids:08x}"
        first = self._uid()
        call = base if self.legacy else first  # the two halves are one call
        self._created(first, Live(base + ";1", state, call), delivered)
        self._created(self._uid(), Live(base + ";2", state, call), delivered)

    @precondition(lambda self: self.world)
    @rule(state=st.sampled_from(STATES), delivered=st.booleans(), data=st.data())
    def new_state(self, state: str, delivered: bool, data: st.DataObject) -> None:
        delivered = delivered or self.resyncing  # nothing is lost while a resync runs
        uid = data.draw(st.sampled_from(sorted(self.world)), label="uid")
        live = self.world[uid] = replace(self.world[uid], state=state)
        if delivered:
            self._deliver(ev("Newstate", **self._fields(uid, live)))
            # Known: its state changes; unknown (its Newchannel was lost): tracked from now on.
            self.seen[uid] = replace(self.seen.get(uid, live), state=state)

    @precondition(lambda self: self.world)
    @rule(
        cause=st.sampled_from(("16", "17", "19", "0")),
        data=st.data(),
        fate=st.sampled_from(("delivered", "lost", "late", "zombie")),
    )
    def hangup(self, cause: str, fate: str, data: st.DataObject) -> None:
        """Delivered, lost, late (delivered by a later step), or the Hangup of a 1.8/11
        masquerade's ``<ZOMBIE>``: it removes the channel but is no hangup."""
        if self.resyncing and fate in ("lost", "late"):
            fate = "delivered"
        uid = data.draw(st.sampled_from(sorted(self.world)), label="uid")
        live = self.world.pop(uid)
        if fate == "zombie":
            zombie = replace(live, channel=live.channel + "<ZOMBIE>")
            self._deliver(ev("Hangup", **self._fields(uid, zombie), Cause="0"))
            self.seen.pop(uid, None)
            self.pending_ghosts.pop(uid, None)
            return
        msg = ev("Hangup", **self._fields(uid, live), Cause=cause)
        if fate == "delivered":
            self._hung_up(uid, msg)
        elif fate == "late":
            self.held[uid] = msg

    def _hung_up(self, uid: str, msg: Message) -> None:
        self._deliver(msg)
        self.hangups += 1
        self.seen.pop(uid, None)
        self.pending_ghosts.pop(uid, None)  # a late Hangup: not a ghost after all

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def late_hangup_arrives(self, data: st.DataObject) -> None:
        uid = data.draw(st.sampled_from(sorted(self.held)), label="uid")
        self._hung_up(uid, self.held.pop(uid))

    @precondition(lambda self: self.seen.keys() & self.world.keys())
    @rule(data=st.data())
    def repeated_newchannel(self, data: st.DataObject) -> None:
        """A Newchannel for a channel already tracked (a resync learnt it first): counted as
        created, the channel itself unchanged."""
        uid = data.draw(st.sampled_from(sorted(self.seen.keys() & self.world.keys())))
        live = self.world[uid]
        self._deliver(ev("Newchannel", **self._fields(uid, live)))
        self.created[live.tech] += 1

    # -- resync: begin, snapshot (events keep flowing around it), complete

    @precondition(lambda self: not self.resyncing)
    @rule()
    def resync_begin(self) -> None:
        self.state.resync_begin()
        self.resyncing = True
        self.snapshot = None

    @precondition(lambda self: self.resyncing and self.snapshot is None)
    @rule(zombie=st.booleans())
    def resync_snapshot(self, zombie: bool) -> None:
        uid_key = "UniqueID" if self.legacy else "Uniqueid"
        items = []
        for uid, live in self.world.items():
            fields = self._fields(uid, live)
            fields[uid_key] = fields.pop("Uniqueid")
            items.append(ev("CoreShowChannel", **fields))
        if zombie:  # a masquerade leftover listed by Asterisk 11: never a live channel
            items.append(
                ev(
                    "CoreShowChannel",
                    Channel="SIP/x-00000001<ZOMBIE>",
                    Uniqueid="0.1",
                    ChannelStateDesc="Up",
                )
            )
        self.snapshot = items

    @precondition(lambda self: self.resyncing and self.snapshot is not None)
    @rule()
    def resync_complete(self) -> None:
        assert self.snapshot is not None
        learnt = self.world.keys() - self.seen.keys()  # their Newchannel was lost
        gone = self.seen.keys() - self.world.keys()  # their Hangup was lost or is late
        assert self.state.resync_complete(self.snapshot) == (len(learnt), len(gone))
        for uid in gone:
            del self.seen[uid]
            self.pending_ghosts[uid] = self.clock.now + GRACE
        for uid in learnt:
            self.seen[uid] = self.world[uid]  # known ones keep what the exporter saw
        self.added += len(learnt)
        self.resyncing = False
        self.snapshot = None

    @precondition(lambda self: not self.resyncing)
    @rule(zombie=st.booleans())
    def resync_at_once(self, zombie: bool) -> None:
        """The same, with no event between the request and the end of the list."""
        self.resync_begin()
        self.resync_snapshot(zombie)
        self.resync_complete()

    @precondition(lambda self: not self.resyncing)
    @rule(now=st.booleans(), really=st.booleans())
    def shutdown(self, now: bool, really: bool) -> None:
        if not (now and really):
            return  # a quarter of the time only: it wipes out everything built so far
        self._deliver(ev("Shutdown", Shutdown="Cleanly", Restart="True"))
        self.lost += len(self.seen)
        self.world.clear()
        self.seen.clear()
        self.held.clear()  # the old Asterisk's late Hangups never come
        # Removed by a resync and still in their grace: no Hangup will come now, ghosts.
        self.ghosts += len(self.pending_ghosts)
        self.pending_ghosts.clear()

    @rule(seconds=st.sampled_from((0.5, 1.0, 3.0)))
    def time_passes(self, seconds: float) -> None:
        self.clock.now += seconds
        self.state.tick()
        expired = [u for u, deadline in self.pending_ghosts.items() if deadline <= self.clock.now]
        for uid in expired:
            del self.pending_ghosts[uid]
        self.ghosts += len(expired)

    # ------------------------------------------------------------------ invariants

    @invariant()
    def aggregates_match_a_recount(self) -> None:
        st_ = self.state
        live = list(st_.channels.values())
        assert min([*st_.channels_by_tech.values(), 0]) == 0, st_.channels_by_tech
        assert min([*st_.channels_by_state.values(), 0]) == 0, st_.channels_by_state
        assert {k: v for k, v in st_.channels_by_tech.items() if v} == Counter(c.tech for c in live)
        assert {k: v for k, v in st_.channels_by_state.items() if v} == Counter(
            c.state for c in live
        )
        assert st_.calls == Counter(c.call for c in live)
        assert st_.active_calls == len({c.call for c in live})

    @invariant()
    def channels_match_the_model(self) -> None:
        st_ = self.state
        assert st_.channels.keys() == self.seen.keys()
        for uid, live in self.seen.items():
            got = st_.channels[uid]
            assert (got.tech, got.state, got.call) == (
                live.tech,
                labels.channel_state(live.state),
                live.call,
            ), uid
        assert st_.calls == Counter(live.call for live in self.seen.values())
        assert st_.active_calls == len({live.call for live in self.seen.values()})

    @invariant()
    def counters_match_the_model(self) -> None:
        st_ = self.state
        # A tech seen only in a resync is exported at 0 (a known label set).
        assert {t: n for t, n in st_.channels_created.items() if n} == dict(self.created)
        assert sum(st_.hangups.values()) == self.hangups
        assert st_.resync_added == self.added
        assert st_.resync_removed == self.ghosts
        assert st_.tracker.lost == {"shutdown": self.lost, "restart": 0}


ChannelAggregates.TestCase.settings = settings(
    max_examples=int(os.environ.get("AMI_HYPOTHESIS_EXAMPLES", "60")),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestChannelAggregates = ChannelAggregates.TestCase
