"""Label vocabularies and bounds: hangup causes, originate reasons, dial statuses, event names.

Everything that becomes a Prometheus label value passes through here, so cardinality is bounded
in one place: values outside a fixed vocabulary, or that are not short identifiers, become
``other``. Free text that is exported as it is (Asterisk's version and system name, peer,
registration and queue names) goes through :func:`bounded`: printable, and at most
:data:`MAX_LABEL_LENGTH` characters, a longer value cut and ending in :data:`TRUNCATED`.
"""

from __future__ import annotations

import re
from typing import Final

OTHER: Final = "other"
# Free-text label values from the AMI server: a longer one is cut and ends in the marker (a
# 900 KB banner must not become a 900 KB `asterisk_info` label).
MAX_LABEL_LENGTH: Final = 128
TRUNCATED: Final = "\u2026"  # HORIZONTAL ELLIPSIS: one character, rare in real names

# AST_CAUSE_* names by number (include/asterisk/causes.h; AMI reference section 4).
HANGUP_CAUSE_NAMES: Final[dict[int, str]] = {
    0: "NOTDEFINED",
    1: "UNALLOCATED",
    2: "NO_ROUTE_TRANSIT_NET",
    3: "NO_ROUTE_DESTINATION",
    5: "MISDIALLED_TRUNK_PREFIX",
    6: "CHANNEL_UNACCEPTABLE",
    7: "CALL_AWARDED_DELIVERED",
    8: "PRE_EMPTED",
    14: "NUMBER_PORTED_NOT_HERE",
    16: "NORMAL_CLEARING",
    17: "USER_BUSY",
    18: "NO_USER_RESPONSE",
    19: "NO_ANSWER",
    20: "SUBSCRIBER_ABSENT",
    21: "CALL_REJECTED",
    22: "NUMBER_CHANGED",
    23: "REDIRECTED_TO_NEW_DESTINATION",
    26: "ANSWERED_ELSEWHERE",
    27: "DESTINATION_OUT_OF_ORDER",
    28: "INVALID_NUMBER_FORMAT",
    29: "FACILITY_REJECTED",
    30: "RESPONSE_TO_STATUS_ENQUIRY",
    31: "NORMAL_UNSPECIFIED",
    34: "NORMAL_CIRCUIT_CONGESTION",
    38: "NETWORK_OUT_OF_ORDER",
    41: "NORMAL_TEMPORARY_FAILURE",
    42: "SWITCH_CONGESTION",
    43: "ACCESS_INFO_DISCARDED",
    44: "REQUESTED_CHAN_UNAVAIL",
    50: "FACILITY_NOT_SUBSCRIBED",
    52: "OUTGOING_CALL_BARRED",
    54: "INCOMING_CALL_BARRED",
    57: "BEARERCAPABILITY_NOTAUTH",
    58: "BEARERCAPABILITY_NOTAVAIL",
    65: "BEARERCAPABILITY_NOTIMPL",
    66: "CHAN_NOT_IMPLEMENTED",
    69: "FACILITY_NOT_IMPLEMENTED",
    81: "INVALID_CALL_REFERENCE",
    88: "INCOMPATIBLE_DESTINATION",
    95: "INVALID_MSG_UNSPECIFIED",
    96: "MANDATORY_IE_MISSING",
    97: "MESSAGE_TYPE_NONEXIST",
    98: "WRONG_MESSAGE",
    99: "IE_NONEXIST",
    100: "INVALID_IE_CONTENTS",
    101: "WRONG_CALL_STATE",
    102: "RECOVERY_ON_TIMER_EXPIRE",
    103: "MANDATORY_IE_LENGTH_ERROR",
    111: "PROTOCOL_ERROR",
    127: "INTERWORKING",
}

# OriginateResponse Reason: a control-frame number (AMI reference section 3.6).
ORIGINATE_REASONS: Final[dict[str, str]] = {
    "0": "failed",
    "1": "hangup",
    "3": "no_answer",
    "4": "answered",
    "5": "busy",
    "8": "congestion",
    "14": "early_media",
}

# DialEnd DialStatus values (section 3.5); GOTO carries a target after a colon.
DIAL_STATUSES: Final = frozenset(
    {"answer", "busy", "noanswer", "cancel", "congestion", "chanunavail", "abort", "continue"}
)

# Security events of class `security` (section 3.9).
SECURITY_EVENTS: Final = frozenset(
    {
        "SuccessfulAuth",
        "InvalidAccountID",
        "InvalidPassword",
        "ChallengeResponseFailed",
        "FailedACL",
        "RequestNotAllowed",
        "RequestBadFormat",
        "SessionLimit",
        "ChallengeSent",
        "AuthMethodNotAllowed",
        "UnexpectedAddress",
        "InvalidTransport",
        "MemoryLimit",
        "LoadAverageLimit",
        "RequestNotSupported",
    }
)

# Channels and calls.
_CALL_EVENTS: Final = """
    Newchannel Newstate Hangup HangupRequest SoftHangupRequest Newexten NewCallerid
    NewConnectedLine NewAccountCode Rename VarSet Cdr CEL DialBegin DialState DialEnd Dial
    OriginateResponse LocalBridge LocalOptimizationBegin LocalOptimizationEnd BridgeCreate
    BridgeEnter BridgeLeave BridgeDestroy BridgeMerge BridgeInfoChannel BridgeInfoComplete
    BridgeVideoSourceUpdate Bridge Link Unlink Masquerade BlindTransfer AttendedTransfer Hold
    Unhold DTMFBegin DTMFEnd DTMF MusicOnHoldStart MusicOnHoldStop MusicOnHold UserEvent
    DeviceStateChange ExtensionStatus PresenceStateChange ChannelTalkingStart
    ChannelTalkingStop ChanSpyStart ChanSpyStop MixMonitorStart MixMonitorStop MonitorStart
    MonitorStop AGIExecStart AGIExecEnd AsyncAGIStart AsyncAGIExec AsyncAGIEnd AGIExec AsyncAGI
    NewPeerAccount Pickup ParkedCall ParkedCallGiveUp ParkedCallTimeOut UnParkedCall MeetmeJoin
    MeetmeLeave MeetmeTalking ConfbridgeStart ConfbridgeEnd ConfbridgeJoin ConfbridgeLeave
    ConfbridgeTalking FAXStatus ReceiveFAX SendFAX RTCPSent RTCPReceived
"""

# Queues and agents.
_QUEUE_EVENTS: Final = """
    QueueCallerJoin QueueCallerLeave QueueCallerAbandon QueueMemberStatus QueueMemberAdded
    QueueMemberRemoved QueueMemberPause QueueMemberPenalty QueueMemberRinginuse AgentCalled
    AgentConnect AgentComplete AgentDump AgentRingNoAnswer AgentLogin AgentLogoff Join Leave
    Agentlogin Agentlogoff
"""

# System.
_SYSTEM_EVENTS: Final = """
    FullyBooted Shutdown Reload Load Unload ModuleLoadReport ChannelReload DNDState Alarm
    AlarmClear SpanAlarm SpanAlarmClear LogChannel PeerStatus ContactStatus Registry AorDetail
    AuthDetail Status StatusComplete CoreShowChannel CoreShowChannelsComplete
    CoreShowChannelMapComplete ChannelHungup ChannelsHungupListComplete TestEvent
    MessageWaiting VoicemailPasswordChange Flash Wink SIPQualifyPeerDone
"""

# List items of the peer, registration and queue polls.
_LIST_ITEMS: Final = """
    PeerEntry PeerlistComplete RegistryEntry RegistrationsComplete ContactList
    ContactListComplete OutboundRegistrationDetail OutboundRegistrationDetailComplete
    QueueParams QueueMember QueueEntry QueueStatusComplete QueueSummary QueueSummaryComplete
"""

# Event names exported as themselves in asterisk_ami_events_total; anything else is `other`.
# The 51 names seen on a real Asterisk 22 plus the common ones of 1.8 to 23 (reference 2.3, 3).
KNOWN_EVENTS: Final = (
    frozenset((_CALL_EVENTS + _QUEUE_EVENTS + _SYSTEM_EVENTS + _LIST_ITEMS).split())
    | SECURITY_EVENTS
)

# A short identifier: what techs, states, services and similar names look like on the wire.
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,31}\Z")


def bounded(text: str) -> str:
    """``text`` as a label value: non-printable characters as ``?``, at most
    :data:`MAX_LABEL_LENGTH` characters; a longer one is cut and ends in :data:`TRUNCATED`."""
    cut = len(text) > MAX_LABEL_LENGTH
    if cut:
        text = text[: MAX_LABEL_LENGTH - 1]  # cut first: never walk a huge value below
    if not text.isprintable():
        text = "".join(c if c.isprintable() else "?" for c in text)
    return text + TRUNCATED if cut else text


def identifier_or_other(value: str) -> str:
    """``value`` when it is a short identifier, else ``other``."""
    return value if _IDENTIFIER.match(value) else OTHER


def channel_tech(channel: str) -> str:
    """The technology of a channel name: the text before ``/`` (``PJSIP``, ``Local``...)."""
    slash = channel.find("/")
    return identifier_or_other(channel[:slash]) if slash > 0 else OTHER


def hangup_cause(raw: str | None) -> tuple[str, str]:
    """``(cause, cause_name)`` labels for a Hangup ``Cause`` value."""
    try:
        number = int(raw) if raw is not None else -1
    except ValueError:
        number = -1
    if 0 <= number <= 127:
        return str(number), HANGUP_CAUSE_NAMES.get(number, "UNKNOWN")
    return OTHER, "UNKNOWN"


def originate_reason(raw: str | None) -> str:
    return ORIGINATE_REASONS.get((raw or "").strip(), OTHER)


def dial_status(raw: str | None) -> str:
    status = (raw or "").strip().lower()
    if status in DIAL_STATUSES:
        return status
    if status == "goto" or status.startswith("goto:"):
        return "goto"
    return OTHER


def event_name(raw: str) -> str:
    return raw if raw in KNOWN_EVENTS else OTHER


def channel_state(raw: str | None) -> str:
    """Lower-case ChannelStateDesc (``Dialing Offhook`` -> ``dialing_offhook``), bounded."""
    state = (raw or "").strip().lower().replace(" ", "_")
    if state.startswith("unknown"):
        return "unknown"
    return identifier_or_other(state) if state else "unknown"
