"""A simulated Asterisk 22 Manager Interface (AMI) server.

It speaks the AMI exactly as the Asterisk 22.10.1 of the repository's captures does: the banner,
login (with the 1 s delay and socket close of a failed login), the synthesised ``FullyBooted``
and ``SuccessfulAuth`` events, ``Ping``, ``CoreStatus``, ``CoreSettings``, ``CoreShowChannels``,
``Events``, ``Logoff`` and the error responses. A traffic generator places calls (an async
``Originate`` of ``Local/<ext>@test`` into ``Context: sink``) whose events are replayed from
templates taken from the real captures, with the per-call values (channel names, Uniqueids, CDR
times) substituted, so header names, header order, ``Privilege`` values and per-channel event
order are those of real Asterisk, including its quirks (``Cdr`` before ``Newchannel``, the
``;1`` half's ``Cause: 0`` on busy, ``OriginateResponse`` reasons, ``Uniqueid`` counters).

It is used by the exporter's demo mode (``ami-simulator``) and by the tests, so it only needs
the standard library and :mod:`ami_exporter.ami.protocol`, and never reads the captures at runtime.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import os
import random
import signal
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from ami_exporter.ami.protocol import AMIParser, Message, serialize
from ami_simulator import profiles

__all__ = ["OUTCOMES", "SimulatedAsterisk", "SimulatorConfig", "main"]

log = logging.getLogger(__name__)

OUTCOMES: Final = (
    "answered",
    "busy",
    "congestion",
    "no_answer",
    "unallocated",
    "rejected",
    "failed_originate",
)

DEFAULT_MIX: Final[dict[str, float]] = {
    "answered": 60.0,
    "busy": 10.0,
    "congestion": 8.0,
    "no_answer": 10.0,
    "unallocated": 5.0,
    "rejected": 4.0,
    "failed_originate": 3.0,
}

# Asterisk's per-user ``writetimeout`` (manager.conf) is 100 ms: a session whose socket stays
# full for that long is logged off. We cannot block on a socket, so the equivalent is: once the
# transport buffer grows past a high-water mark, give it 100 ms to drain below it, else close.
_WRITE_TIMEOUT: Final = 0.1
_HIGH_WATER: Final = 256 * 1024

# Every event class a read=all user gets; "Events: on" (or no Events header) means all of them.
_ALL_CLASSES: Final = frozenset(
    {
        "system",
        "call",
        "log",
        "verbose",
        "command",
        "agent",
        "user",
        "config",
        "dtmf",
        "reporting",
        "cdr",
        "dialplan",
        "originate",
        "agi",
        "cc",
        "aoc",
        "test",
        "security",
        "message",
    }
)

# The channel snapshot block shared by every channel event, in Asterisk's header order.
_SNAPSHOT_KEYS: Final = (
    "Channel",
    "ChannelState",
    "ChannelStateDesc",
    "CallerIDNum",
    "CallerIDName",
    "ConnectedLineNum",
    "ConnectedLineName",
    "Language",
    "AccountCode",
    "Context",
    "Exten",
    "Priority",
    "Uniqueid",
    "Linkedid",
)

_PRIVILEGE: Final = {"Newexten": "dialplan,all", "VarSet": "dialplan,all"}

# Call scripts, one per outcome, derived from the captures 03-originate-<ext>.exporter.raw of the
# real Asterisk (100 answered, 200 busy, 300 congestion, 400 unallocated, 600 no answer, 720
# rejected, invalid-tech = Foo/bar). Events are kept in the capture's order. Format:
#   "@<outcome> <ext>"   starts a script;
#   "S <Event> <n>"      a channel event of half n (;1 or ;2): the indented lines that name
#                        snapshot keys update that channel's snapshot (kept for later events),
#                        the others are the event's own headers after the snapshot;
#   "R <Event> <priv>"   any other event, with its headers; " =<Prefix> <n>" expands to the
#                        current snapshot of half n with every key prefixed (LocalOne, Dest...);
#   "W ring" / "W hold"  where the call waits ring_time / its hold time.
# Placeholders: {c1} {c2} channel names, {u1} {u2} Uniqueids, {aid} the Originate's ActionID,
# {start} {answer} {end} {dur} {bill} CDR times, {hold} the answered call's Wait() argument.
_SCRIPTS: Final = """\
@answered 100
S Newchannel 1
 Channel: {c1}
 ChannelState: 0
 ChannelStateDesc: Down
 CallerIDNum: <unknown>
 CallerIDName: <unknown>
 ConnectedLineNum: <unknown>
 ConnectedLineName: <unknown>
 Language: en
 AccountCode:
 Context: test
 Exten: 100
 Priority: 1
 Uniqueid: {u1}
 Linkedid: {u1}
S Newchannel 2
 Channel: {c2}
 ChannelState: 4
 ChannelStateDesc: Ring
 CallerIDNum: <unknown>
 CallerIDName: <unknown>
 ConnectedLineNum: <unknown>
 ConnectedLineName: <unknown>
 Language: en
 AccountCode:
 Context: test
 Exten: 100
 Priority: 1
 Uniqueid: {u2}
 Linkedid: {u1}
S Newexten 1
 Extension: 100
 Application: AppDial2
 AppData: (Outgoing Line)
S VarSet 1
 Variable: EXPORTER_TEST
 Value: 1
S NewCallerid 1
 CallerIDNum: 5551000
 CallerIDName: AMI Test
 CID-CallingPres: 0 (Presentation Allowed, Not Screened)
S NewConnectedLine 1
 ConnectedLineNum: 5551000
 ConnectedLineName: AMI Test
S VarSet 2
 Variable: EXPORTER_TEST
 Value: 1
S NewCallerid 2
 CallerIDNum: 5551000
 CallerIDName: AMI Test
 ConnectedLineNum: 5551000
 ConnectedLineName: AMI Test
 CID-CallingPres: 0 (Presentation Allowed, Not Screened)
S NewConnectedLine 2
R LocalBridge call,all
 =LocalOne 1
 =LocalTwo 2
 Context: test
 Exten: 100
 LocalOptimization: Yes
W ring
R DialBegin call,all
 =Dest 1
 DialString: 100@test
S Newexten 2
 Extension: 100
 Application: Answer
 AppData:
S Newstate 2
 ChannelState: 6
 ChannelStateDesc: Up
S Newstate 1
 ChannelState: 6
 ChannelStateDesc: Up
R DialEnd call,all
 =Dest 1
 DialStatus: ANSWER
R OriginateResponse call,all
 ActionID: {aid}
 Response: Success
 Channel: {c1}
 Context: sink
 Exten: s
 Reason: 4
 Uniqueid: {u1}
 CallerIDNum: 5551000
 CallerIDName: AMI Test
R DeviceStateChange call,all
 Device: Local/100@test
 State: INUSE
R DeviceStateChange call,all
 Device: Local/100@test
 State: INUSE
S Newexten 1
 Context: sink
 Exten: s
 Extension: s
 Application: NoOp
 AppData: originator sink
S Newexten 1
 Priority: 2
 Extension: s
 Application: Wait
 AppData: 30
S Newexten 2
 Priority: 2
 Extension: 100
 Application: Wait
 AppData: {hold}
W hold
S Newexten 2
 Priority: 3
 Extension: 100
 Application: Hangup
 AppData: 16
R Cdr cdr,all
 AccountCode:
 Source: 5551000
 Destination: 100
 DestinationContext: test
 CallerID: "AMI Test" <5551000>
 Channel: {c2}
 DestinationChannel:
 LastApplication: Hangup
 LastData: 16
 StartTime: {start}
 AnswerTime: {answer}
 EndTime: {end}
 Duration: {dur}
 BillableSeconds: {bill}
 Disposition: ANSWERED
 AMAFlags: DOCUMENTATION
 UniqueID: {u2}
 UserField:
S SoftHangupRequest 2
 Cause: 16
S HangupRequest 1
 Cause: 16
S Hangup 2
 Cause: 16
 Cause-txt: Normal Clearing
R DeviceStateChange call,all
 Device: Local/100@test
 State: NOT_INUSE
S SoftHangupRequest 1
 Cause: 16
S Hangup 1
 Cause: 16
 Cause-txt: Normal Clearing
R DeviceStateChange call,all
 Device: Local/100@test
 State: NOT_INUSE
R Cdr cdr,all
 AccountCode:
 Source: 5551000
 Destination: s
 DestinationContext: sink
 CallerID: "AMI Test" <5551000>
 Channel: {c1}
 DestinationChannel:
 LastApplication: Wait
 LastData: 30
 StartTime: {start}
 AnswerTime: {answer}
 EndTime: {end}
 Duration: {dur}
 BillableSeconds: {bill}
 Disposition: ANSWERED
 AMAFlags: DOCUMENTATION
 UniqueID: {u1}
 UserField:
@busy 200
S Newchannel 1
 Channel: {c1}
 ChannelState: 0
 ChannelStateDesc: Down
 CallerIDNum: <unknown>
 CallerIDName: <unknown>
 ConnectedLineNum: <unknown>
 ConnectedLineName: <unknown>
 Language: en
 AccountCode:
 Context: test
 Exten: 200
 Priority: 1
 Uniqueid: {u1}
 Linkedid: {u1}
S Newchannel 2
 Channel: {c2}
 ChannelState: 4
 ChannelStateDesc: Ring
 CallerIDNum: <unknown>
 CallerIDName: <unknown>
 ConnectedLineNum: <unknown>
 ConnectedLineName: <unknown>
 Language: en
 AccountCode:
 Context: test
 Exten: 200
 Priority: 1
 Uniqueid: {u2}
 Linkedid: {u1}
S Newexten 1
 Extension: 200
 Application: AppDial2
 AppData: (Outgoing Line)
S VarSet 1
 Variable: EXPORTER_TEST
 Value: 1
S NewCallerid 1
 CallerIDNum: 5551000
 CallerIDName: AMI Test
 CID-CallingPres: 0 (Presentation Allowed, Not Screened)
S NewConnectedLine 1
 ConnectedLineNum: 5551000
 ConnectedLineName: AMI Test
S VarSet 2
 Variable: EXPORTER_TEST
 Value: 1
S NewCallerid 2
 CallerIDNum: 5551000
 CallerIDName: AMI Test
 ConnectedLineNum: 5551000
 ConnectedLineName: AMI Test
 CID-CallingPres: 0 (Presentation Allowed, Not Screened)
S NewConnectedLine 2
R LocalBridge call,all
 =LocalOne 1
 =LocalTwo 2
 Context: test
 Exten: 200
 LocalOptimization: Yes
W ring
R DialBegin call,all
 =Dest 1
 DialString: 200@test
S Newexten 2
 Extension: 200
 Application: Busy
 AppData: 2
S Newstate 2
 ChannelState: 7
 ChannelStateDesc: Busy
R DialEnd call,all
 =Dest 1
 DialStatus: BUSY
S HangupRequest 2
 Cause: 0
R Cdr cdr,all
 AccountCode:
 Source: 5551000
 Destination: 200
 DestinationContext: test
 CallerID: "AMI Test" <5551000>
 Channel: {c2}
 DestinationChannel:
 LastApplication: Busy
 LastData: 2
 StartTime: {start}
 AnswerTime:
 EndTime: {end}
 Duration: {dur}
 BillableSeconds: {bill}
 Disposition: BUSY
 AMAFlags: DOCUMENTATION
 UniqueID: {u2}
 UserField:
R DeviceStateChange call,all
 Device: Local/200@test
 State: INUSE
S SoftHangupRequest 2
 Cause: 16
S Hangup 2
 Cause: 17
 Cause-txt: User busy
R Cdr cdr,all
 AccountCode:
 Source: 5551000
 Destination: 200
 DestinationContext: test
 CallerID: "AMI Test" <5551000>
 Channel: {c1}
 DestinationChannel:
 LastApplication: AppDial2
 LastData: (Outgoing Line)
 StartTime: {start}
 AnswerTime:
 EndTime: {end}
 Duration: {dur}
 BillableSeconds: {bill}
 Disposition: BUSY
 AMAFlags: DOCUMENTATION
 UniqueID: {u1}
 UserField:
R DeviceStateChange call,all
 Device: Local/200@test
 State: NOT_INUSE
R OriginateResponse call,all
 ActionID: {aid}
 Response: Failure
 Channel: Local/200@test
 Context: sink
 Exten: s
 Reason: 5
 Uniqueid: <unknown>
 CallerIDNum: 5551000
 CallerIDName: AMI Test
S Hangup 1
 Cause: 0
 Cause-txt: Unknown
R DeviceStateChange call,all
 Device: Local/200@test
 State: NOT_INUSE
@congestion 300
S Newchannel 1
 Channel: {c1}
 ChannelState: 0
 ChannelStateDesc: Down
 CallerIDNum: <unknown>
 CallerIDName: <unknown>
 ConnectedLineNum: <unknown>
 ConnectedLineName: <unknown>
 Language: en
 AccountCode:
 Context: test
 Exten: 300
 Priority: 1
 Uniqueid: {u1}
 Linkedid: {u1}
S Newchannel 2
 Channel: {c2}
 ChannelState: 4
 ChannelStateDesc: Ring
 CallerIDNum: <unknown>
 CallerIDName: <unknown>
 ConnectedLineNum: <unknown>
 ConnectedLineName: <unknown>
 Language: en
 AccountCode:
 Context: test
 Exten: 300
 Priority: 1
 Uniqueid: {u2}
 Linkedid: {u1}
S Newexten 1
 Extension: 300
 Application: AppDial2
 AppData: (Outgoing Line)
S VarSet 1
 Variable: EXPORTER_TEST
 Value: 1
S NewCallerid 1
 CallerIDNum: 5551000
 CallerIDName: AMI Test
 CID-CallingPres: 0 (Presentation Allowed, Not Screened)
S NewConnectedLine 1
 ConnectedLineNum: 5551000
 ConnectedLineName: AMI Test
S VarSet 2
 Variable: EXPORTER_TEST
 Value: 1
S NewCallerid 2
 CallerIDNum: 5551000
 CallerIDName: AMI Test
 ConnectedLineNum: 5551000
 ConnectedLineName: AMI Test
 CID-CallingPres: 0 (Presentation Allowed, Not Screened)
S NewConnectedLine 2
R LocalBridge call,all
 =LocalOne 1
 =LocalTwo 2
 Context: test
 Exten: 300
 LocalOptimization: Yes
W ring
R DialBegin call,all
 =Dest 1
 DialString: 300@test
S Newexten 2
 Extension: 300
 Application: Congestion
 AppData: 2
S Newstate 2
 ChannelState: 7
 ChannelStateDesc: Busy
R DialEnd call,all
 =Dest 1
 DialStatus: CONGESTION
S HangupRequest 2
 Cause: 0
R Cdr cdr,all
 AccountCode:
 Source: 5551000
 Destination: 300
 DestinationContext: test
 CallerID: "AMI Test" <5551000>
 Channel: {c2}
 DestinationChannel:
 LastApplication: Congestion
 LastData: 2
 StartTime: {start}
 AnswerTime:
 EndTime: {end}
 Duration: {dur}
 BillableSeconds: {bill}
 Disposition: CONGESTION
 AMAFlags: DOCUMENTATION
 UniqueID: {u2}
 UserField:
S SoftHangupRequest 2
 Cause: 16
S Hangup 2
 Cause: 34
 Cause-txt: Circuit/channel congestion
R DeviceStateChange call,all
 Device: Local/300@test
 State: INUSE
R OriginateResponse call,all
 ActionID: {aid}
 Response: Failure
 Channel: Local/300@test
 Context: sink
 Exten: s
 Reason: 8
 Uniqueid: <unknown>
 CallerIDNum: 5551000
 CallerIDName: AMI Test
S Hangup 1
 Cause: 0
 Cause-txt: Unknown
R Cdr cdr,all
 AccountCode:
 Source: 5551000
 Destination: 300
 DestinationContext: test
 CallerID: "AMI Test" <5551000>
 Channel: {c1}
 DestinationChannel:
 LastApplication: AppDial2
 LastData: (Outgoing Line)
 StartTime: {start}
 AnswerTime:
 EndTime: {end}
 Duration: {dur}
 BillableSeconds: {bill}
 Disposition: CONGESTION
 AMAFlags: DOCUMENTATION
 UniqueID: {u1}
 UserField:
R DeviceStateChange call,all
 Device: Local/300@test
 State: NOT_INUSE
R DeviceStateChange call,all
 Device: Local/300@test
 State: NOT_INUSE
@unallocated 400
S Newchannel 1
 Channel: {c1}
 ChannelState: 0
 ChannelStateDesc: Down
 CallerIDNum: <unknown>
 CallerIDName: <unknown>
 ConnectedLineNum: <unknown>
 ConnectedLineName: <unknown>
 Language: en
 AccountCode:
 Context: test
 Exten: 400
 Priority: 1
 Uniqueid: {u1}
 Linkedid: {u1}
S Newchannel 2
 Channel: {c2}
 ChannelState: 4
 ChannelStateDesc: Ring
 CallerIDNum: <unknown>
 CallerIDName: <unknown>
 ConnectedLineNum: <unknown>
 ConnectedLineName: <unknown>
 Language: en
 AccountCode:
 Context: test
 Exten: 400
 Priority: 1
 Uniqueid: {u2}
 Linkedid: {u1}
S Newexten 1
 Extension: 400
 Application: AppDial2
 AppData: (Outgoing Line)
S VarSet 1
 Variable: EXPORTER_TEST
 Value: 1
S NewCallerid 1
 CallerIDNum: 5551000
 CallerIDName: AMI Test
 CID-CallingPres: 0 (Presentation Allowed, Not Screened)
S NewConnectedLine 1
 ConnectedLineNum: 5551000
 ConnectedLineName: AMI Test
S VarSet 2
 Variable: EXPORTER_TEST
 Value: 1
S NewCallerid 2
 CallerIDNum: 5551000
 CallerIDName: AMI Test
 ConnectedLineNum: 5551000
 ConnectedLineName: AMI Test
 CID-CallingPres: 0 (Presentation Allowed, Not Screened)
S NewConnectedLine 2
R LocalBridge call,all
 =LocalOne 1
 =LocalTwo 2
 Context: test
 Exten: 400
 LocalOptimization: Yes
W ring
R DialBegin call,all
 =Dest 1
 DialString: 400@test
S Newexten 2
 Extension: 400
 Application: Hangup
 AppData: 1
R Cdr cdr,all
 AccountCode:
 Source: 5551000
 Destination: 400
 DestinationContext: test
 CallerID: "AMI Test" <5551000>
 Channel: {c2}
 DestinationChannel:
 LastApplication: Hangup
 LastData: 1
 StartTime: {start}
 AnswerTime:
 EndTime: {end}
 Duration: {dur}
 BillableSeconds: {bill}
 Disposition: NO ANSWER
 AMAFlags: DOCUMENTATION
 UniqueID: {u2}
 UserField:
S SoftHangupRequest 2
 Cause: 16
S HangupRequest 1
 Cause: 1
S Hangup 2
 Cause: 1
 Cause-txt: Unallocated (unassigned) number
R DialEnd call,all
 =Dest 1
 DialStatus: NOANSWER
R OriginateResponse call,all
 ActionID: {aid}
 Response: Failure
 Channel: Local/400@test
 Context: sink
 Exten: s
 Reason: 0
 Uniqueid: <unknown>
 CallerIDNum: 5551000
 CallerIDName: AMI Test
S Hangup 1
 Cause: 1
 Cause-txt: Unallocated (unassigned) number
R Cdr cdr,all
 AccountCode:
 Source: 5551000
 Destination: 400
 DestinationContext: test
 CallerID: "AMI Test" <5551000>
 Channel: {c1}
 DestinationChannel:
 LastApplication: AppDial2
 LastData: (Outgoing Line)
 StartTime: {start}
 AnswerTime:
 EndTime: {end}
 Duration: {dur}
 BillableSeconds: {bill}
 Disposition: NO ANSWER
 AMAFlags: DOCUMENTATION
 UniqueID: {u1}
 UserField:
R DeviceStateChange call,all
 Device: Local/400@test
 State: NOT_INUSE
R DeviceStateChange call,all
 Device: Local/400@test
 State: NOT_INUSE
@no_answer 600
S Newchannel 1
 Channel: {c1}
 ChannelState: 0
 ChannelStateDesc: Down
 CallerIDNum: <unknown>
 CallerIDName: <unknown>
 ConnectedLineNum: <unknown>
 ConnectedLineName: <unknown>
 Language: en
 AccountCode:
 Context: test
 Exten: 600
 Priority: 1
 Uniqueid: {u1}
 Linkedid: {u1}
S Newchannel 2
 Channel: {c2}
 ChannelState: 4
 ChannelStateDesc: Ring
 CallerIDNum: <unknown>
 CallerIDName: <unknown>
 ConnectedLineNum: <unknown>
 ConnectedLineName: <unknown>
 Language: en
 AccountCode:
 Context: test
 Exten: 600
 Priority: 1
 Uniqueid: {u2}
 Linkedid: {u1}
S Newexten 1
 Extension: 600
 Application: AppDial2
 AppData: (Outgoing Line)
S VarSet 1
 Variable: EXPORTER_TEST
 Value: 1
S NewCallerid 1
 CallerIDNum: 5551000
 CallerIDName: AMI Test
 CID-CallingPres: 0 (Presentation Allowed, Not Screened)
S NewConnectedLine 1
 ConnectedLineNum: 5551000
 ConnectedLineName: AMI Test
S VarSet 2
 Variable: EXPORTER_TEST
 Value: 1
R Cdr cdr,all
 AccountCode:
 Source: 5551000
 Destination: 600
 DestinationContext: test
 CallerID: "AMI Test" <5551000>
 Channel: {c2}
 DestinationChannel:
 LastApplication: Hangup
 LastData: 19
 StartTime: {start}
 AnswerTime:
 EndTime: {end}
 Duration: {dur}
 BillableSeconds: {bill}
 Disposition: NO ANSWER
 AMAFlags: DOCUMENTATION
 UniqueID: {u2}
 UserField:
S NewCallerid 2
 CallerIDNum: 5551000
 CallerIDName: AMI Test
 ConnectedLineNum: 5551000
 ConnectedLineName: AMI Test
 CID-CallingPres: 0 (Presentation Allowed, Not Screened)
S NewConnectedLine 2
R LocalBridge call,all
 =LocalOne 1
 =LocalTwo 2
 Context: test
 Exten: 600
 LocalOptimization: Yes
W ring
R OriginateResponse call,all
 ActionID: {aid}
 Response: Failure
 Channel: Local/600@test
 Context: sink
 Exten: s
 Reason: 0
 Uniqueid: <unknown>
 CallerIDNum: 5551000
 CallerIDName: AMI Test
R Cdr cdr,all
 AccountCode:
 Source: 5551000
 Destination: 600
 DestinationContext: test
 CallerID: "AMI Test" <5551000>
 Channel: {c1}
 DestinationChannel:
 LastApplication: AppDial2
 LastData: (Outgoing Line)
 StartTime: {start}
 AnswerTime:
 EndTime: {end}
 Duration: {dur}
 BillableSeconds: {bill}
 Disposition: NO ANSWER
 AMAFlags: DOCUMENTATION
 UniqueID: {u1}
 UserField:
R DialBegin call,all
 =Dest 1
 DialString: 600@test
S Newexten 2
 Extension: 600
 Application: Hangup
 AppData: 19
S SoftHangupRequest 2
 Cause: 16
S HangupRequest 1
 Cause: 19
S Hangup 2
 Cause: 19
 Cause-txt: User alerting, no answer
R DialEnd call,all
 =Dest 1
 DialStatus: NOANSWER
S Hangup 1
 Cause: 19
 Cause-txt: User alerting, no answer
R DeviceStateChange call,all
 Device: Local/600@test
 State: NOT_INUSE
R DeviceStateChange call,all
 Device: Local/600@test
 State: NOT_INUSE
@rejected 720
R Cdr cdr,all
 AccountCode:
 Source: 5551000
 Destination: 720
 DestinationContext: test
 CallerID: "AMI Test" <5551000>
 Channel: {c2}
 DestinationChannel:
 LastApplication: Hangup
 LastData: CALL_REJECTED
 StartTime: {start}
 AnswerTime:
 EndTime: {end}
 Duration: {dur}
 BillableSeconds: {bill}
 Disposition: NO ANSWER
 AMAFlags: DOCUMENTATION
 UniqueID: {u2}
 UserField:
S Newchannel 1
 Channel: {c1}
 ChannelState: 0
 ChannelStateDesc: Down
 CallerIDNum: <unknown>
 CallerIDName: <unknown>
 ConnectedLineNum: <unknown>
 ConnectedLineName: <unknown>
 Language: en
 AccountCode:
 Context: test
 Exten: 720
 Priority: 1
 Uniqueid: {u1}
 Linkedid: {u1}
S Newchannel 2
 Channel: {c2}
 ChannelState: 4
 ChannelStateDesc: Ring
 CallerIDNum: <unknown>
 CallerIDName: <unknown>
 ConnectedLineNum: <unknown>
 ConnectedLineName: <unknown>
 Language: en
 AccountCode:
 Context: test
 Exten: 720
 Priority: 1
 Uniqueid: {u2}
 Linkedid: {u1}
S Newexten 1
 Extension: 720
 Application: AppDial2
 AppData: (Outgoing Line)
S VarSet 1
 Variable: EXPORTER_TEST
 Value: 1
S NewCallerid 1
 CallerIDNum: 5551000
 CallerIDName: AMI Test
 CID-CallingPres: 0 (Presentation Allowed, Not Screened)
S NewConnectedLine 1
 ConnectedLineNum: 5551000
 ConnectedLineName: AMI Test
S VarSet 2
 Variable: EXPORTER_TEST
 Value: 1
S NewCallerid 2
 CallerIDNum: 5551000
 CallerIDName: AMI Test
 ConnectedLineNum: 5551000
 ConnectedLineName: AMI Test
 CID-CallingPres: 0 (Presentation Allowed, Not Screened)
S NewConnectedLine 2
R LocalBridge call,all
 =LocalOne 1
 =LocalTwo 2
 Context: test
 Exten: 720
 LocalOptimization: Yes
W ring
R DialBegin call,all
 =Dest 1
 DialString: 720@test
S Newexten 2
 Extension: 720
 Application: Hangup
 AppData: CALL_REJECTED
S SoftHangupRequest 2
 Cause: 16
S HangupRequest 1
 Cause: 21
S Hangup 2
 Cause: 21
 Cause-txt: Call Rejected
R DeviceStateChange call,all
 Device: Local/720@test
 State: NOT_INUSE
R DialEnd call,all
 =Dest 1
 DialStatus: NOANSWER
S Hangup 1
 Cause: 21
 Cause-txt: Call Rejected
R Cdr cdr,all
 AccountCode:
 Source: 5551000
 Destination: 720
 DestinationContext: test
 CallerID: "AMI Test" <5551000>
 Channel: {c1}
 DestinationChannel:
 LastApplication: AppDial2
 LastData: (Outgoing Line)
 StartTime: {start}
 AnswerTime:
 EndTime: {end}
 Duration: {dur}
 BillableSeconds: {bill}
 Disposition: NO ANSWER
 AMAFlags: DOCUMENTATION
 UniqueID: {u1}
 UserField:
R DeviceStateChange call,all
 Device: Local/720@test
 State: NOT_INUSE
R OriginateResponse call,all
 ActionID: {aid}
 Response: Failure
 Channel: Local/720@test
 Context: sink
 Exten: s
 Reason: 0
 Uniqueid: <unknown>
 CallerIDNum: 5551000
 CallerIDName: AMI Test
@failed_originate invalid-tech
R OriginateResponse call,all
 ActionID: {aid}
 Response: Failure
 Channel: Foo/bar
 Context: sink
 Exten: s
 Reason: 0
 Uniqueid: <unknown>
 CallerIDNum: 5551000
 CallerIDName: AMI Test
"""

_CAUSE_TXT: Final = {0: "Unknown", 16: "Normal Clearing"}


@dataclass(frozen=True, slots=True)
class _Step:
    """One event of a script: its class (for event masks) and its text with placeholders."""

    cls: str
    template: str
    # (half, action, snapshot, application) with action "add", "update" or "remove": how the
    # event changes the set of live channels, so that set always matches the emitted events.
    effects: tuple[tuple[int, str, str, str], ...]


@dataclass(frozen=True, slots=True)
class _Phase:
    wait: str  # "" (start at once), "ring" or "hold": what to wait before this phase
    steps: tuple[_Step, ...]


@dataclass(frozen=True, slots=True)
class _Script:
    ext: str
    phases: tuple[_Phase, ...]
    uses_channels: bool


def _pairs_text(pairs: Sequence[tuple[str, str]]) -> str:
    # serialize() adds the closing blank line; a fragment must not have it.
    return serialize(pairs).decode("utf-8", "surrogateescape")[:-2]


def _compile_scripts(source: str, profile: profiles.Profile | None = None) -> dict[str, _Script]:
    """Turn the compact capture-derived scripts into ready-to-format event templates.

    Done once per version profile (see :mod:`ami_simulator.profiles`, which rewrites
    each event into that version's dialect) so that a call costs only ``str.format_map`` per
    event.
    """
    # The captures' caller name becomes a per-call value (VICIdial call IDs, see start_call).
    source = source.replace("AMI Test", "{cidname}")
    blocks: list[tuple[str, str, list[str]]] = []  # (outcome, ext, lines)
    scripts: dict[str, _Script] = {}
    for raw in source.splitlines():
        if raw.startswith("@"):
            outcome, ext = raw[1:].split()
            blocks.append((outcome, ext, []))
        elif blocks:
            blocks[-1][2].append(raw)
    for outcome, ext, lines in blocks:
        snap: dict[int, dict[str, str]] = {}
        app: dict[int, tuple[str, str]] = {}
        phases: list[_Phase] = []
        steps: list[_Step] = []
        wait = ""
        items: list[tuple[str, list[str]]] = []
        for raw in lines:
            if raw.startswith(" "):
                items[-1][1].append(raw[1:])
            else:
                items.append((raw, []))
        uses_channels = False
        for head, body in items:
            kind, name, arg = [*head.split(), ""][:3]
            if kind == "W":
                phases.append(_Phase(wait, tuple(steps)))
                steps = []
                wait = name
                continue
            pairs: list[tuple[str, str]] = [("Event", name)]
            effects: tuple[tuple[int, str, str, str], ...] = ()
            if kind == "S":
                uses_channels = True
                half = int(arg)
                state = snap.setdefault(half, {})
                extras: list[tuple[str, str]] = []
                for line in body:
                    key, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if key in _SNAPSHOT_KEYS:
                        state[key] = value
                    else:
                        extras.append((key, value))
                extra = dict(extras)
                if name == "Newexten":
                    app[half] = (extra["Application"], extra["AppData"])
                priv = _PRIVILEGE.get(name, "call,all")
                pairs.append(("Privilege", priv))
                snapshot = [(key, state[key]) for key in _SNAPSHOT_KEYS]
                pairs += snapshot
                pairs += extras
                action = {"Newchannel": "add", "Hangup": "remove"}.get(name, "update")
                application = _pairs_text(
                    [
                        ("Application", app.get(half, ("", ""))[0]),
                        ("ApplicationData", app.get(half, ("", ""))[1]),
                    ]
                )
                effects = ((half, action, _pairs_text(snapshot), application),)
            else:
                priv = arg
                pairs.append(("Privilege", priv))
                for line in body:
                    if line.startswith("="):
                        prefix, half_text = line[1:].split()
                        state = snap[int(half_text)]
                        pairs += [(prefix + key, state[key]) for key in _SNAPSHOT_KEYS]
                        continue
                    key, _, value = line.partition(":")
                    pairs.append((key, value.removeprefix(" ")))
            rewritten = (
                [pairs]
                if profile is None
                else profiles.rewrite_event(profile, outcome, name, pairs)
            )
            if not rewritten:  # an event this version lacks: its channel effects still apply
                steps.append(_Step(priv.split(",")[0], "", effects))
            for event_pairs in rewritten:
                template = serialize(event_pairs).decode("utf-8", "surrogateescape")
                cls = dict(event_pairs).get("Privilege", priv).split(",")[0]
                steps.append(_Step(cls, template, effects))
                effects = ()
        phases.append(_Phase(wait, tuple(steps)))
        scripts[outcome] = _Script(ext, tuple(phases), uses_channels)
    return scripts


_COMPILED: Final = _compile_scripts(_SCRIPTS)
_COMPILED_BY_PROFILE: dict[str, dict[str, _Script]] = {"22": _COMPILED}


def _scripts_for(profile: profiles.Profile) -> dict[str, _Script]:
    scripts = _COMPILED_BY_PROFILE.get(profile.major)
    if scripts is None:
        scripts = _COMPILED_BY_PROFILE[profile.major] = _compile_scripts(_SCRIPTS, profile)
    return scripts


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _utc_tv(epoch: float) -> str:
    """Security events' ``EventTV`` format: ``2026-11-27T09:26:28.887+0000``."""
    ms = int(epoch * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{ms:03d}+0000"


def _local(epoch: float, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    # CDR times and CoreStatus dates are local time without a zone, like Asterisk's.
    return time.strftime(fmt, time.localtime(epoch))


@dataclass
class SimulatorConfig:
    """Settings of a :class:`SimulatedAsterisk` (defaults match the captures' test box)."""

    host: str = "127.0.0.1"
    port: int = 5038  # 0 = pick a free port
    username: str = "exporter"
    secret: str = "s3cret"  # noqa: S105 - the captures' test-only credential
    calls_per_second: float = 1.0  # 0 = no automatic traffic
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    hold_time: float = 5.0  # answered calls stay up this long (+-50 % jitter when generated)
    ring_time: float = 0.3  # time between the call set-up and its answer or failure
    auth_delay: float = 1.0  # Asterisk sleeps 1 s before "Authentication failed"
    seed: int | None = None
    # A version profile, "11", "13", "16", "18", "20" or "22", or a full version of one of
    # them; it decides the banner, event names and fields (ami_exporter.simulator_profiles).
    asterisk_version: str = "22.10.1"
    ami_version: str = ""  # "": the profile's AMI version (22: 11.0.0)
    system_name: str = ""
    allow_remote: bool = False  # refuse a non-loopback listen address unless True
    ssl_context: ssl.SSLContext | None = None  # serve AMI over TLS (manager.conf tlsenable)
    vicidial: bool = False  # generated calls carry VICIdial auto-dial call IDs (V...)


class _Call:
    __slots__ = (
        "answered_at",
        "handle",
        "hold",
        "live",
        "next_phase",
        "script",
        "started",
        "values",
    )

    def __init__(self, script: _Script, values: dict[str, str], hold: float) -> None:
        self.script = script
        self.values = values
        self.hold = hold
        self.next_phase = 0
        self.started = time.time()
        self.answered_at = 0.0
        self.handle: asyncio.Handle | None = None
        # half -> (snapshot text, application text) of each live channel
        self.live: dict[int, tuple[str, str]] = {}


class _Session:
    __slots__ = (
        "authenticated",
        "challenge",
        "classes",
        "closed",
        "connected_at",
        "local",
        "remote",
        "session_id",
        "slow_timer",
        "transport",
        "writer",
    )

    def __init__(self, writer: asyncio.StreamWriter, session_id: str) -> None:
        self.writer = writer
        self.transport = writer.transport
        self.authenticated = False
        self.classes: frozenset[str] = frozenset()
        self.closed = False
        self.challenge: str | None = None
        self.connected_at = time.time()
        self.session_id = session_id
        self.slow_timer: asyncio.TimerHandle | None = None
        self.local = self._address(writer.get_extra_info("sockname"))
        self.remote = self._address(writer.get_extra_info("peername"))

    @staticmethod
    def _address(addr: object) -> str:
        if isinstance(addr, tuple) and len(addr) >= 2:
            family = "IPV6" if ":" in str(addr[0]) else "IPV4"
            return f"{family}/TCP/{addr[0]}/{addr[1]}"
        return "IPV4/TCP/0.0.0.0/0"

    def send(self, data: bytes) -> None:
        if self.closed or self.transport.is_closing():
            return
        self.transport.write(data)
        if self.slow_timer is None and self.transport.get_write_buffer_size() > _HIGH_WATER:
            loop = asyncio.get_running_loop()
            self.slow_timer = loop.call_later(_WRITE_TIMEOUT, self._check_slow)

    def _check_slow(self) -> None:
        self.slow_timer = None
        if not self.closed and self.transport.get_write_buffer_size() > _HIGH_WATER:
            # Like Asterisk: the slow reader is logged off, its stream cut wherever it was.
            log.info("simulator: session %s too slow (writetimeout), closing", self.remote)
            self.abort()

    def close(self) -> None:
        """Close after flushing what is buffered (Goodbye, Shutdown)."""
        if not self.closed:
            self.closed = True
            self.transport.close()
        self._cancel_timer()

    def abort(self) -> None:
        """Close at once, dropping unsent bytes (slow reader, lost connection)."""
        self.closed = True
        self.transport.abort()
        self._cancel_timer()

    def _cancel_timer(self) -> None:
        if self.slow_timer is not None:
            self.slow_timer.cancel()
            self.slow_timer = None


class SimulatedAsterisk:
    """An in-process AMI server that behaves like the Asterisk 22 of the captures."""

    def __init__(self, config: SimulatorConfig) -> None:
        unknown = set(config.mix) - set(OUTCOMES)
        if unknown:
            raise ValueError(f"unknown outcome(s) in mix: {', '.join(sorted(unknown))}")
        self.config = config
        self.profile = profiles.profile_for(config.asterisk_version)
        self.asterisk_version = (
            config.asterisk_version if "." in config.asterisk_version
            else self.profile.asterisk_version
        )  # fmt: skip
        self.ami_version = config.ami_version or self.profile.ami_version
        self._scripts = _scripts_for(self.profile)
        # Peers, registrations and queues: change them with extras.set_peer_status() etc.
        self.extras = profiles.SimulatedExtras(self.profile, self._broadcast)
        self.login_attempts: list[tuple[float, str, bool]] = []
        self.stats: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self._rng = random.Random(config.seed)  # simulation, not crypto
        self._server: asyncio.Server | None = None
        self._sessions: set[_Session] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._calls: set[_Call] = set()
        self._generator: asyncio.Task[None] | None = None
        self._port = config.port
        self._running = False
        self._down = False
        self._reset_counters()

    def _reset_counters(self) -> None:
        # A restarted Asterisk is a new process: new start time, counters from 0.
        self._startup = time.time()
        self._reload = self._startup
        self._uid_counter = 0
        self._chan_counter = 0
        self._processed = 0

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen, and start the traffic generator when ``calls_per_second`` > 0."""
        if not self.config.allow_remote and not _is_loopback(self.config.host):
            raise ValueError(
                f"refusing to listen on non-loopback address {self.config.host!r} "
                "(set allow_remote to override)"
            )
        await self._listen()
        self._running = True
        self._start_generator()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self.config.host, self._port, ssl=self.config.ssl_context
        )
        sock = self._server.sockets[0]
        self._port = int(sock.getsockname()[1])

    def _start_generator(self) -> None:
        if self.config.calls_per_second > 0 and self._generator is None:
            self._generator = asyncio.create_task(self._generate())

    async def _stop_generator(self) -> None:
        task, self._generator = self._generator, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def stop(self) -> None:
        """Stop traffic, close every session and the listener."""
        self._running = False
        await self._stop_generator()
        self._drop_calls()
        await self._close_listener()
        for session in list(self._sessions):
            session.abort()
        await self._await_handlers()

    async def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def _await_handlers(self) -> None:
        if self._handlers:
            _, pending = await asyncio.wait(set(self._handlers), timeout=1.0)
            for task in pending:
                task.cancel()

    @property
    def port(self) -> int:
        """The port actually bound (useful with ``port=0``)."""
        return self._port

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self._port}"

    @property
    def sessions(self) -> int:
        """Connected sessions now."""
        return sum(1 for s in self._sessions if not s.closed)

    async def restart(self, downtime: float = 0.2) -> None:
        """Like ``core restart now``: hang up every call, Shutdown, go away, come back fresh."""
        self._down = True
        await self._stop_generator()
        chunks: list[tuple[str, bytes]] = []
        for call in list(self._calls):
            if call.handle is not None:
                call.handle.cancel()
            for snapshot, _ in call.live.values():
                # Channels torn down by a restart end with Cause 0 (capture 06).
                text = _pairs_text([("Event", "Hangup"), ("Privilege", "call,all")])
                text += snapshot + "Cause: 0\r\nCause-txt: Unknown\r\n\r\n"
                text = text.format_map(call.values)
                if self.profile.old_events:
                    pairs = [
                        (k, v) for k, _, v in (line.partition(": ") for line in text.split("\r\n"))
                        if k
                    ]  # fmt: skip
                    text = "".join(
                        serialize(p).decode()
                        for p in profiles.rewrite_event(self.profile, "", "Hangup", pairs)
                    )
                chunks.append(("call", text.encode()))
            if call.live:
                device = f"Local/{call.script.ext}@test"
                state = [("Device", device), ("State", "NOT_INUSE")]
                pairs = [("Event", "DeviceStateChange"), ("Privilege", "call,all"), *state]
                chunks.append(("call", serialize(pairs)))
        self._calls.clear()
        restart = [("Shutdown", "Cleanly"), ("Restart", "True")]
        chunks.append(
            ("system", serialize([("Event", "Shutdown"), ("Privilege", "system,all"), *restart]))
        )
        self._broadcast(chunks)
        await self._close_listener()
        for session in list(self._sessions):
            session.close()
        await self._await_handlers()
        await asyncio.sleep(downtime)
        self._reset_counters()
        if self._running:
            await self._listen()
            self._down = False
            self._start_generator()

    async def drop_connections(self) -> None:
        """Cut every client socket abruptly (no Shutdown); calls go on."""
        for session in list(self._sessions):
            session.abort()
        await self._await_handlers()

    def end_all_calls_silently(self) -> None:
        """Forget every live channel without any event (Hangups lost while disconnected)."""
        self._drop_calls()

    def _drop_calls(self) -> None:
        for call in self._calls:
            if call.handle is not None:
                call.handle.cancel()
        self._calls.clear()

    # -- calls ---------------------------------------------------------------------------

    async def _generate(self) -> None:
        loop = asyncio.get_running_loop()
        rate = self.config.calls_per_second
        outcomes = [o for o, w in self.config.mix.items() if w > 0]
        weights = [self.config.mix[o] for o in outcomes]
        if not outcomes:
            return
        next_at = loop.time()
        while True:
            # Poisson arrivals on an absolute schedule, so sleep overshoot does not lower
            # the rate: late calls are started in a burst, as a real PBX would see them.
            next_at += self._rng.expovariate(rate)
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            outcome = self._rng.choices(outcomes, weights)[0]
            hold = self.config.hold_time * self._rng.uniform(0.5, 1.5)
            caller_name = None
            if self.config.vicidial:  # VICIdial auto-dial call IDs: V + mmddhhmmss + lead id
                caller_name = f"V{time.strftime('%m%d%H%M%S')}{sum(self.stats.values()):010d}"
            self.start_call(outcome, hold, caller_name=caller_name)

    def start_call(
        self,
        outcome: str = "answered",
        hold_time: float | None = None,
        *,
        caller_name: str | None = None,
    ) -> None:
        """Start one call now; its events follow asynchronously, timed like a real call.

        ``caller_name`` replaces the captures' CallerIDName ``AMI Test`` (e.g. a VICIdial call
        ID such as ``V1127093000000012345``)."""
        script = self._scripts.get(outcome)
        if script is None:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {', '.join(OUTCOMES)}")
        if not self._running:
            raise RuntimeError("simulator is not running")
        if self._down:
            return  # a restarting Asterisk takes no calls
        self.stats[outcome] += 1
        now = time.time()
        values = {"aid": f"sim-orig-{sum(self.stats.values())}", "start": _local(now)}
        hold = self.config.hold_time if hold_time is None else hold_time
        values["hold"] = f"{hold:g}"
        values["cidname"] = "AMI Test" if caller_name is None else caller_name
        if script.uses_channels:
            name = f"Local/{script.ext}@test-{self._chan_counter:08x}"
            self._chan_counter += 1
            epoch = int(now)
            values["c1"], values["c2"] = name + ";1", name + ";2"
            values["u1"] = f"{epoch}.{self._uid_counter}"
            values["u2"] = f"{epoch}.{self._uid_counter + 1}"
            self._uid_counter += 2
            self._processed += 2
        call = _Call(script, values, hold)
        self._calls.add(call)
        call.handle = asyncio.get_running_loop().call_soon(self._run_phase, call)

    def _run_phase(self, call: _Call) -> None:
        phase = call.script.phases[call.next_phase]
        now = time.time()
        values = call.values
        if phase.wait == "ring":
            call.answered_at = now  # only used by templates of answered calls
            values["answer"] = _local(now)
        values["end"] = _local(now)
        values["dur"] = str(int(now - call.started))
        values["bill"] = str(int(now - call.answered_at)) if call.answered_at else "0"
        chunks: list[tuple[str, bytes]] = []
        live = call.live
        for step in phase.steps:
            chunks.append((step.cls, step.template.format_map(values).encode()))
            for half, action, snapshot, application in step.effects:
                if action == "remove":
                    live.pop(half, None)
                elif action == "add" or half in live:
                    live[half] = (snapshot, application)
        self._broadcast(chunks)
        call.next_phase += 1
        if call.next_phase >= len(call.script.phases):
            self._calls.discard(call)
            call.handle = None
            return
        wait = call.script.phases[call.next_phase].wait
        delay = call.hold if wait == "hold" else self.config.ring_time
        call.handle = asyncio.get_running_loop().call_later(delay, self._run_phase, call)

    def _broadcast(self, chunks: list[tuple[str, bytes]]) -> None:
        if not chunks:
            return
        # One write per session and distinct event mask, not one per event: at 200 calls/s
        # this keeps the simulator far from the 2-core box's limit.
        joined: dict[frozenset[str], bytes] = {}
        for session in self._sessions:
            if not session.authenticated or session.closed or not session.classes:
                continue
            data = joined.get(session.classes)
            if data is None:
                wanted = session.classes
                data = b"".join(chunk for cls, chunk in chunks if cls in wanted)
                joined[wanted] = data
            if data:
                session.send(data)

    def _channel_rows(self) -> list[tuple[str, str, float]]:
        rows: list[tuple[str, str, float]] = []
        for call in self._calls:
            for _half, (snapshot, application) in sorted(call.live.items()):
                rows.append(
                    (
                        snapshot.format_map(call.values),
                        application.format_map(call.values),
                        call.started,
                    )
                )
        return rows

    @staticmethod
    def _duration(started: float) -> str:
        secs = max(0, int(time.time() - started))
        return f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}"

    def active_channels(self) -> list[dict[str, str]]:
        """The live channels, with the fields CoreShowChannels reports for them."""
        result: list[dict[str, str]] = []
        for snapshot, application, started in self._channel_rows():
            row: dict[str, str] = {}
            for line in (snapshot + application).split("\r\n"):
                if line:
                    key, _, value = line.partition(": ")
                    row[key] = value
            row["Duration"] = self._duration(started)
            row["BridgeId"] = ""
            result.append(row)
        return result

    # -- sessions ------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        session = _Session(writer, f"0x{0x550000000000 + self._rng.getrandbits(36):x}")
        self._sessions.add(session)
        parser = AMIParser(expect_banner=False)
        try:
            session.send(f"Asterisk Call Manager/{self.ami_version}\r\n".encode())
            while not session.closed:
                data = await reader.read(65536)
                if not data:
                    break
                for message in parser.feed(data):
                    if session.closed:
                        break
                    await self._dispatch(session, message)
        except (ConnectionError, OSError):
            pass
        finally:
            session.close()
            self._sessions.discard(session)
            if task is not None:
                self._handlers.discard(task)

    @staticmethod
    def _response(message: Message, kind: str, *pairs: tuple[str, str]) -> bytes:
        # Responses echo the ActionID right after "Response:" and never invent one.
        headers = [("Response", kind)]
        action_id = message.get("ActionID")
        if action_id is not None:
            headers.append(("ActionID", action_id))
        headers.extend(pairs)
        return serialize(headers)

    async def _dispatch(self, session: _Session, message: Message) -> None:
        if message.kind != "action":
            session.send(self._response(message, "Error", ("Message", "Missing action in request")))
            return
        name = message.name
        lname = name.lower()
        if lname == "login":
            await self._login(session, message)
            return
        if lname == "logoff":
            goodbye = ("Message", "Thanks for all the fish.")
            session.send(self._response(message, "Goodbye", goodbye))
            session.close()
            return
        if lname == "challenge":
            session.challenge = str(self._rng.randrange(100_000_000, 999_999_999))
            session.send(self._response(message, "Success", ("Challenge", session.challenge)))
            return
        if not session.authenticated:
            session.send(self._response(message, "Error", ("Message", "Permission denied")))
            return
        if lname == "events":
            # The mask belongs to the session, so this one is handled here, not in _actions.
            session.classes = self._parse_mask(message.get("EventMask") or "off")
            state = "On" if session.classes else "Off"
            session.send(self._response(message, "Success", ("Events", state)))
            return
        extra = self.extras.answer(lname, message)  # peers, registrations, queues
        if extra is not None:
            session.send(extra)
            return
        handler = self._actions.get(lname)
        if handler is None:
            text = (
                f"Invalid/unknown command: {name}. "
                "Use Action: ListCommands to show available commands."
            )
            session.send(self._response(message, "Error", ("Message", text)))
            return
        session.send(handler(self, message))

    async def _login(self, session: _Session, message: Message) -> None:
        username = message.get("Username") or ""
        ok = username == self.config.username
        if ok:
            key = message.get("Key")
            if (message.get("AuthType") or "").lower() == "md5" and key is not None:
                text = (session.challenge or "") + self.config.secret
                expected = hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()
                ok = session.challenge is not None and key.lower() == expected
            else:
                ok = message.get("Secret") == self.config.secret
        self.login_attempts.append((time.monotonic(), username, ok))
        now = time.time()
        if not ok:
            # The reason goes to read=security sessions at once; the client itself waits.
            event = "InvalidPassword" if username == self.config.username else "InvalidAccountID"
            if self.profile.major != "11":  # security events reach AMI from 12 on
                self._broadcast([("security", self._security_event(session, event, username, now))])
            await asyncio.sleep(self.config.auth_delay)
            fail = ("Message", "Authentication failed")
            session.send(self._response(message, "Error", fail))
            session.close()  # no Goodbye, as Asterisk
            return
        session.authenticated = True
        session.classes = self._parse_mask(message.get("Events"))
        session.send(self._response(message, "Success", ("Message", "Authentication accepted")))
        if "system" in session.classes:
            uptime, reload = int(now - self._startup), int(now - self._reload)
            session.send(serialize(profiles.fully_booted(self.profile, uptime, reload)))
        if self.profile.major != "11":
            self._broadcast(
                [("security", self._security_event(session, "SuccessfulAuth", username, now))]
            )

    @staticmethod
    def _security_event(session: _Session, event: str, username: str, now: float) -> bytes:
        ok = event == "SuccessfulAuth"
        pairs = [
            ("Event", event),
            ("Privilege", "security,all"),
            ("EventTV", _utc_tv(now)),
            ("Severity", "Informational" if ok else "Error"),
            ("Service", "AMI"),
            ("EventVersion", "2" if event == "InvalidPassword" else "1"),
            ("AccountID", username),
            ("SessionID", session.session_id),
            ("LocalAddress", session.local),
            ("RemoteAddress", session.remote),
        ]
        if ok:
            pairs.append(("UsingPassword", "0"))
        # Unauthenticated sessions have no session start time yet (the epoch), as in capture 02.
        pairs.append(("SessionTV", _utc_tv(session.connected_at if ok else 0.0)))
        return serialize(pairs)

    @staticmethod
    def _parse_mask(value: str | None) -> frozenset[str]:
        if value is None:
            return _ALL_CLASSES
        text = value.strip().lower()
        if text in ("on", "yes", "true", "1", "all"):
            return _ALL_CLASSES
        if text in ("off", "no", "false", "0", ""):
            return frozenset()
        return frozenset(part.strip() for part in text.split(",")) & _ALL_CLASSES

    def _act_ping(self, message: Message) -> bytes:
        return self._response(
            message, "Success", ("Ping", "Pong"), ("Timestamp", f"{time.time():.6f}")
        )

    def _act_core_status(self, message: Message) -> bytes:
        live = sum(len(call.live) for call in self._calls)
        return self._response(
            message,
            "Success",
            ("CoreStartupDate", _local(self._startup, "%Y-%m-%d")),
            ("CoreStartupTime", _local(self._startup, "%H:%M:%S")),
            ("CoreReloadDate", _local(self._reload, "%Y-%m-%d")),
            ("CoreReloadTime", _local(self._reload, "%H:%M:%S")),
            ("CoreCurrentCalls", str(live)),
            *([("CoreProcessedCalls", str(self._processed))] if self.profile.processed_calls
              else []),
        )  # fmt: skip

    def _act_core_settings(self, message: Message) -> bytes:
        return self._response(
            message,
            "Success",
            ("AMIversion", self.ami_version),
            ("AsteriskVersion", self.asterisk_version),
            ("SystemName", self.config.system_name),
            ("CoreMaxCalls", "5000"),
            ("CoreMaxLoadAvg", "0.000000"),
            ("CoreRunUser", ""),
            ("CoreRunGroup", ""),
            ("CoreMaxFilehandles", "0"),
            ("CoreRealTimeEnabled", "No"),
            ("CoreCDRenabled", "Yes"),
            ("CoreHTTPenabled", "No"),
            *([("SoundsSearchCustomDir", "No")] if self.profile.sounds_custom_dir else []),
        )

    def _act_core_show_channels(self, message: Message) -> bytes:
        action_id = message.get("ActionID")
        follow = [("EventList", "start"), ("Message", "Channels will follow")]
        parts = [self._response(message, "Success", *follow)]
        if self.profile.old_events:  # the 1.8/11 key set, UniqueID, ActionID last in Complete
            rows_11 = self.active_channels()
            for row in rows_11:
                parts.append(profiles.core_show_channel(self.profile, row, action_id))
            complete = "CoreShowChannelsComplete"
            parts.append(profiles.list_complete(self.profile, complete, action_id, len(rows_11)))
            return b"".join(parts)
        head = "Event: CoreShowChannel\r\n"
        if action_id is not None:
            head += _pairs_text([("ActionID", action_id)])
        rows = self._channel_rows()
        for snapshot, application, started in rows:
            duration = _pairs_text([("Duration", self._duration(started)), ("BridgeId", "")])
            parts.append(f"{head}{snapshot}{application}{duration}\r\n".encode())
        done: list[tuple[str, str]] = [("Event", "CoreShowChannelsComplete")]
        if action_id is not None:
            done.append(("ActionID", action_id))
        done += [("EventList", "Complete"), ("ListItems", str(len(rows)))]
        parts.append(serialize(done))
        return b"".join(parts)

    def _act_command(self, message: Message) -> bytes:
        # The simulated exporter user has no write=command, like the captures' one.
        return self._response(message, "Error", ("Message", "Permission denied"))

    _actions: Final[dict[str, Callable[[SimulatedAsterisk, Message], bytes]]] = {
        "ping": _act_ping,
        "corestatus": _act_core_status,
        "coresettings": _act_core_settings,
        "coreshowchannels": _act_core_show_channels,
        "command": _act_command,
    }


def _parse_mix(text: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, weight = part.partition("=")
        name = name.strip()
        if not sep or name not in OUTCOMES:
            raise argparse.ArgumentTypeError(
                f"bad mix entry {part!r}; outcomes: {', '.join(OUTCOMES)}"
            )
        try:
            mix[name] = float(weight)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad weight in {part!r}") from None
    return mix


def _parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"--listen wants HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ami-simulator",
        description="Simulated Asterisk 22 AMI server with generated call traffic.",
    )
    parser.add_argument("--listen", type=_parse_listen, default=("127.0.0.1", 5038))
    parser.add_argument("--username", default="exporter")
    parser.add_argument("--secret", default=None, help="default: $AMI_SECRET, else s3cret")
    parser.add_argument("--calls-per-second", type=float, default=1.0)
    parser.add_argument("--mix", type=_parse_mix, default=None, help="answered=60,busy=10,...")
    parser.add_argument("--hold-time", type=float, default=5.0)
    parser.add_argument("--ring-time", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--asterisk-version",
        choices=profiles.VERSIONS,
        default="22",
        help="version profile: banner, event names and fields of that Asterisk (default 22)",
    )
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback address")
    return parser


async def _serve(config: SimulatorConfig) -> None:
    simulator = SimulatedAsterisk(config)
    await simulator.start()
    print(f"ami-simulator: listening on {simulator.address}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await simulator.stop()


def main(argv: list[str] | None = None) -> int:
    """``ami-simulator`` entry point: serve until SIGINT/SIGTERM, then exit 0."""
    args = _build_parser().parse_args(argv)
    host, port = args.listen
    if not args.allow_remote and not _is_loopback(host):
        print(
            f"ami-simulator: refusing to listen on non-loopback address {host!r} "
            "(use --allow-remote to override)",
            file=sys.stderr,
        )
        return 2
    secret = args.secret if args.secret is not None else os.environ.get("AMI_SECRET", "s3cret")
    config = SimulatorConfig(
        host=host,
        port=port,
        username=args.username,
        secret=secret,
        calls_per_second=args.calls_per_second,
        hold_time=args.hold_time,
        ring_time=args.ring_time,
        seed=args.seed,
        asterisk_version=args.asterisk_version,
        allow_remote=args.allow_remote,
    )
    if args.mix is not None:
        config.mix = args.mix
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        asyncio.run(_serve(config))
    except OSError as exc:
        print(f"ami-simulator: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
