"""``ami-exporter check``: a one-shot diagnosis of every configured AMI server.

Same flags and config file as the exporter. For each server it walks the steps a session goes
through, sequentially and with a timeout each, over plain asyncio streams and the sans-IO
parser (no reconnect loop, no state), and prints one line per step with a verdict and, on a
failure, the fix to try:

1. ``dns``: resolve the host (skipped for an IP address);
2. ``tcp``: connect (refused, timeout, unreachable; the TLS handshake with ``--ami.tls``);
3. ``banner``: an AMI banner, and its version;
4. ``login``: ``Login`` with ``Events: on``;
5. ``commands``: what ``ListCommands`` (no privilege needed) lists for this user: which of the
   exporter's actions are allowed, which are missing (module not loaded, or which write class
   to grant) and what each write class buys;
   ``action``: ``CoreSettings``, ``CoreStatus``, ``CoreShowChannels``, ``Ping`` are allowed;
6. ``events``: events arrive at all, and ``FullyBooted`` came (read class ``system``);
7. ``summary``: active channels and calls, Asterisk uptime, last reload; then ``Logoff``.

The secret is never printed. Exit codes (the first failing server's, in configuration order):

====  ===========================================================================
0     every server passed (warnings allowed)
1     another failure (the server closed the session, an unexpected answer)
2     bad flags or configuration
3     cannot connect: DNS, refused, timeout, unreachable, TLS
4     not AMI: no banner, or another service's banner
5     login failed: ``Authentication failed``, ``Login Already In Use``, no answer
6     permissions: an action is denied (write class), or no event arrives (read classes)
====  ===========================================================================
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import errno
import ipaddress
import os
import socket
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, TextIO

from ami_exporter import __version__
from ami_exporter.ami.protocol import Message
from ami_exporter.ami.session import (
    BANNER_PREFIX,
    ActionResult,
    ClientSession,
    failure_kind,
    login_failure,
)
from ami_exporter.ami.values import local_timestamp, to_float
from ami_exporter.cli.prepare import prepare
from ami_exporter.client import polls
from ami_exporter.client.tls import client_ssl_context
from ami_exporter.config.errors import ConfigError
from ami_exporter.config.flags import build_arg_parser
from ami_exporter.config.model import ServerConfig
from ami_exporter.config.values import positive_seconds
from ami_exporter.web.statuspage import human_duration

EXIT_OK: Final = 0
EXIT_OTHER: Final = 1
EXIT_USAGE: Final = 2
EXIT_CONNECT: Final = 3
EXIT_NOT_AMI: Final = 4
EXIT_LOGIN: Final = 5
EXIT_PERMISSION: Final = 6

# Asterisk sleeps 1 s before "Authentication failed": never wait less than this for Login.
LOGIN_TIMEOUT_MIN: Final = 5.0
# How long to wait, after Login, for FullyBooted and for any event at all.
EVENTS_WAIT: Final = 2.0
LOGOFF_TIMEOUT: Final = 1.0
READ_SIZE: Final = 65536
ACTION_ID_PREFIX: Final = "amicheck-"

OK: Final = "[ OK ]"
WARN: Final = "[WARN]"
FAIL: Final = "[FAIL]"
INFO: Final = "[INFO]"

# What the summary and the exporter rely on; all need write class system or reporting but Ping.
CORE_ACTIONS: Final = ("CoreSettings", "CoreStatus", "CoreShowChannels", "Ping")
# What each manager.conf write class buys the exporter: (class, actions, what they give).
WRITE_CLASSES: Final = (
    (
        "reporting (or system)",
        ("CoreSettings", "CoreStatus", "CoreShowChannels"),
        "version, uptime, reloads and the live channel set after every (re)connect",
    ),
    (
        "reporting (or system)",
        ("SIPpeers", "SIPshowpeer", "SIPshowregistry", "IAXpeerlist"),
        "chan_sip/IAX2 peers, their qualify round trip, chan_sip registrations",
    ),
    (
        "reporting (or system)",
        ("PJSIPShowRegistrationsOutbound",),
        "PJSIP outbound registrations",
    ),
    (
        "system",
        ("PJSIPShowEndpoints", "PJSIPShowAors", "PJSIPShowContacts"),
        "every PJSIP endpoint, also the ones that sent no event since the exporter connected, "
        "and which static contacts are qualified",
    ),
    ("none", ("QueueStatus", "QueueSummary"), "queue gauges (with queues: true)"),
)
# The module an action belongs to, by name prefix: where none of its actions is listed, the
# module is not loaded (nothing to grant).
_MODULES: Final = (("PJSIP", "res_pjsip"), ("SIP", "chan_sip"), ("IAX", "chan_iax2"))

# The secret of the server being checked (each check task has its own context): masked in
# anything a server sends back, should one ever echo it.
_SECRET: contextvars.ContextVar[str] = contextvars.ContextVar("ami_check_secret", default="")


@dataclass
class ServerReport:
    """The lines printed for one server and the exit code its worst failure gives."""

    server: ServerConfig
    lines: list[tuple[str, str]] = field(default_factory=list)
    exit_code: int = EXIT_OK

    def add(self, status: str, text: str) -> None:
        self.lines.append((status, text))

    def fail(self, text: str, code: int) -> None:
        self.lines.append((FAIL, text))
        if self.exit_code == EXIT_OK:
            self.exit_code = code

    @property
    def warnings(self) -> int:
        return sum(1 for status, _ in self.lines if status == WARN)

    def render(self) -> str:
        cfg = self.server
        where = cfg.address if cfg.name == cfg.address else f"{cfg.name} ({cfg.address})"
        head = f"== {where}, user {cfg.username!r}"
        if cfg.tls:
            head += ", TLS"
        collectors = f"{INFO} collectors: {cfg.collectors_text}"  # --collector.*, YAML keys
        lines = [f"{status} {text}" for status, text in self.lines]
        return "\n".join([head, *lines, collectors])


class _Closed(Exception):
    """The server closed the connection."""


class _Session:
    """Sequential request/response over one AMI connection, recording the events seen.

    The protocol (ActionIDs, list answers, what is an event) is the sans-IO
    :class:`~ami_exporter.ami.session.ClientSession`; this only moves bytes with deadlines.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.ami = ClientSession(parse=None, action_id_prefix=ACTION_ID_PREFIX)
        self.head = b""  # the first bytes received, to show what a non-AMI peer said
        self.events: list[tuple[float, Message]] = []
        self._results: dict[str, ActionResult] = {}

    async def read(self, deadline: float) -> None:
        """Wait for the next bytes (until ``deadline``) and take in what they complete."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        data = await asyncio.wait_for(self.reader.read(READ_SIZE), remaining)
        if not data:
            self.ami.receive_eof()
            raise _Closed
        if len(self.head) < 120:
            self.head += data[: 120 - len(self.head)]
        got = self.ami.receive(data)
        now = time.monotonic()
        self.events.extend((now, msg) for msg in got.events)
        for result in got.results:
            self._results[result.action_id] = result

    async def banner(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while self.ami.banner is None:
            await self.read(deadline)
        return self.ami.banner

    async def request(
        self,
        name: str,
        timeout: float,
        complete_event: str | None = None,
        list_items: tuple[str, ...] = (),
        **fields: str,
    ) -> ActionResult:
        """Send an action; return its whole answer (response, list items, closing event)."""
        action_id, data = self.ami.send(
            name, complete_event=complete_event, list_items=list_items, **fields
        )
        self.writer.write(data)
        await self.writer.drain()
        deadline = time.monotonic() + timeout
        try:
            while action_id not in self._results:
                await self.read(deadline)
        except TimeoutError:
            self.ami.abandon(action_id)
            raise
        return self._results.pop(action_id)

    def close(self) -> None:
        self.writer.close()


def _printable(text: str, limit: int = 80) -> str:
    """Text a server sent, made safe to print: ASCII, bounded, the secret masked."""
    secret = _SECRET.get()
    if secret:
        text = text.replace(secret, "********")
    shown = text[:limit].encode("ascii", "backslashreplace").decode("ascii")
    return shown + ("..." if len(text) > limit else "")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def asterisk_for_ami(version: str) -> str:
    """The Asterisk release(s) a banner's AMI version comes with (AMI reference, 2.1)."""
    parts = version.split(".")
    try:
        major, minor = int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return "unknown Asterisk"
    if major == 1:
        return {
            0: "Asterisk 1.2/1.4",
            1: "Asterisk 1.6/1.8",
            2: "Asterisk 10",
            3: "Asterisk 11",
        }.get(minor, "Asterisk 1.x")
    if major == 2:
        return "Asterisk 12" if minor < 5 else "Asterisk 13 (or 14.0/14.1)"
    if 3 <= major <= 12:
        return f"Asterisk {major + 11}"
    return "Asterisk 24 or later" if major > 12 else "unknown Asterisk"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------ the steps


async def check_server(cfg: ServerConfig, *, events_wait: float = EVENTS_WAIT) -> ServerReport:
    """Diagnose one server; never raises for anything the network or the server does."""
    report = ServerReport(cfg)
    _SECRET.set(cfg.secret)
    session = await _connect(cfg, report)
    if session is None:
        return report
    try:
        await _diagnose(cfg, session, report, events_wait)
    except (OSError, ssl.SSLError) as exc:  # a reset mid-session
        report.fail(f"connection lost: {exc.strerror or exc}", EXIT_OTHER)
    finally:
        session.close()
    return report


async def _connect(cfg: ServerConfig, report: ServerReport) -> _Session | None:
    """Steps ``dns`` and ``tcp`` (or ``tls``): the open connection, or None (reported)."""
    if not _is_ip(cfg.host) and not await _resolve(cfg, report):
        return None
    try:
        ssl_context = client_ssl_context(cfg)
    except ConfigError as exc:
        report.fail(f"tls: {exc}", EXIT_USAGE)
        return None
    started = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                cfg.host,
                cfg.port,
                ssl=ssl_context,
                server_hostname=(cfg.tls_server_name or cfg.host) if ssl_context else None,
                limit=READ_SIZE,
            ),
            cfg.connect_timeout,
        )
    except OSError as exc:  # TimeoutError, ssl.SSLError and ConnectionRefusedError included
        report.fail(_connect_failure(cfg, ssl_context is not None, exc), EXIT_CONNECT)
        return None
    elapsed = time.monotonic() - started
    where = cfg.address
    if ssl_context is not None:
        ssl_object = writer.get_extra_info("ssl_object")
        version = ssl_object.version() if ssl_object is not None else "?"
        verified = "certificate not verified" if cfg.tls_insecure_skip_verify else "verified"
        report.add(OK, f"tls {where} connected in {_ms(elapsed)} ({version}, {verified})")
    else:
        report.add(OK, f"tcp {where} connected in {_ms(elapsed)}")
    return _Session(reader, writer)


async def _resolve(cfg: ServerConfig, report: ServerReport) -> bool:
    """Step ``dns``: whether the host name resolves (reported either way)."""
    timeout = cfg.connect_timeout
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(cfg.host, cfg.port, type=socket.SOCK_STREAM), timeout
        )
    except TimeoutError:
        report.fail(
            f"dns: no answer resolving {cfg.host!r} within {timeout:g} s - check "
            "/etc/resolv.conf and the DNS server, or use the IP address",
            EXIT_CONNECT,
        )
        return False
    except socket.gaierror as exc:
        report.fail(
            f"dns: cannot resolve {cfg.host!r}: {exc.strerror} - check the host name in "
            "--ami.address / the config file, or use the IP address",
            EXIT_CONNECT,
        )
        return False
    addresses = sorted({str(info[4][0]) for info in infos})
    report.add(OK, f"dns {cfg.host} -> {', '.join(addresses)}")
    return True


def _connect_failure(cfg: ServerConfig, tls: bool, exc: OSError) -> str:
    """The verdict of a connection (or TLS handshake) that failed with ``exc``."""
    kind = "tls" if tls else "tcp"
    where = cfg.address
    if isinstance(exc, TimeoutError):
        what = "TCP connection and TLS handshake" if tls else "TCP connection"
        return (
            f"{kind} {where}: no {what} within {cfg.connect_timeout:g} s - a firewall drops "
            f"the packets (allow TCP port {cfg.port} from this host to Asterisk), the host is "
            "down, or the address is wrong"
        )
    if isinstance(exc, ssl.SSLError):
        why = getattr(exc, "verify_message", None) or exc.reason or str(exc)
        return (
            f"tls {where}: TLS handshake failed: {why} - check that this port serves AMI "
            "over TLS (manager.conf tlsenable = yes, tlsbindaddr, usually port 5039) and not "
            "plain AMI; for a certificate error give --ami.tls-ca-file / "
            "--ami.tls-server-name (the name in the certificate)"
        )
    if isinstance(exc, ConnectionRefusedError):
        return (
            f"tcp {where}: connection refused - nothing listens there: AMI disabled "
            "(manager.conf [general] enabled = yes), another port (port = 5038) or bound "
            "to another address (bindaddr = 0.0.0.0 or this interface), or Asterisk is "
            "not running"
        )
    detail = exc.strerror or str(exc)
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN):
        hint = "no route to the host: check the address, the routing, or a firewall rejecting"
    else:
        hint = "the connection could not be made"
    return f"{kind} {where}: {detail} - {hint}"


async def _diagnose(
    cfg: ServerConfig, session: _Session, report: ServerReport, events_wait: float
) -> None:
    """The steps after the connection, each only once the one before it passed."""
    if not await _check_banner(cfg, session, report):
        return
    logged_in_at = await _check_login(cfg, session, report)
    if logged_in_at is None:
        return
    allowed = await _check_commands(cfg, session, report)
    results = await _check_actions(cfg, session, report, allowed)
    if results is None:
        return
    booted = await _check_events(cfg, session, report, logged_in_at, events_wait)
    report.add(INFO, "summary: " + _summary(results, booted))
    with contextlib.suppress(TimeoutError, _Closed, OSError):
        await session.request("Logoff", LOGOFF_TIMEOUT)


async def _check_banner(cfg: ServerConfig, session: _Session, report: ServerReport) -> bool:
    """Step ``banner``: whether an AMI banner came."""
    try:
        banner = await session.banner(cfg.connect_timeout)
    except TimeoutError:
        got = f"; received {_printable(session.head.decode('latin-1'))!r}" if session.head else ""
        tls_hint = "" if cfg.tls else "AMI over TLS spoken to in plain text (add --ami.tls), "
        report.fail(
            f"banner: connected, but no AMI banner within {cfg.connect_timeout:g} s{got} - "
            f"not an AMI port: {tls_hint}a service that waits for its client to speak first "
            "(HTTP...), or an overloaded Asterisk",
            EXIT_NOT_AMI,
        )
        return False
    except _Closed:
        report.fail(
            "banner: the connection was closed before any banner - Asterisk's authlimit "
            "(too many unauthenticated sessions, manager.conf [general] authlimit) or a TCP "
            "wrapper / proxy in front of it refusing this host",
            EXIT_NOT_AMI,
        )
        return False
    if not banner.startswith(BANNER_PREFIX):
        report.fail(
            f"banner: {_printable(banner)!r} is not AMI - another service listens on port "
            f"{cfg.port}: compare the port in --ami.address / the config file with "
            "manager.conf [general] port (default 5038)",
            EXIT_NOT_AMI,
        )
        return False
    ami_version = banner[len(BANNER_PREFIX) :].strip()
    report.add(
        OK, f"banner {_printable(banner)!r}: AMI {ami_version} ({asterisk_for_ami(ami_version)})"
    )
    return True


async def _check_login(cfg: ServerConfig, session: _Session, report: ServerReport) -> float | None:
    """Step ``login``: when the login was accepted (monotonic clock), or None."""
    login_timeout = max(cfg.connect_timeout, LOGIN_TIMEOUT_MIN)
    started = time.monotonic()
    try:
        login = await session.request(
            "Login", login_timeout, Username=cfg.username, Secret=cfg.secret, Events="on"
        )
    except TimeoutError:
        report.fail(
            f"login as {cfg.username!r}: no answer within {login_timeout:g} s - Asterisk is "
            "overloaded or stuck (check 'manager show connected' and the CPU), or something "
            "in between swallows the traffic",
            EXIT_LOGIN,
        )
        return None
    except _Closed:
        report.fail(
            f"login as {cfg.username!r}: the connection was closed without an answer - "
            "Asterisk is shutting down or restarting, or a proxy cut the session",
            EXIT_LOGIN,
        )
        return None
    logged_in_at = time.monotonic()
    message = (login.response.get("Message") or "").strip()
    failure = login_failure(login.response)
    if failure is not None:
        report.fail(_login_failure(cfg.username, failure, message), EXIT_LOGIN)
        return None
    report.add(
        OK,
        f"login as {cfg.username!r}: {_printable(message or 'accepted')} in "
        f"{_ms(logged_in_at - started)}",
    )
    return logged_in_at


def _login_failure(username: str, failure: str, message: str) -> str:
    """The verdict of a refused login (``failure`` as :func:`login_failure` names it)."""
    if failure == "auth":
        return (
            f"login as {username!r}: Authentication failed - wrong secret, unknown "
            "user, or the user's permit/deny ACL excludes this host; Asterisk answers the "
            "same for all three and logs which only on its side: the NOTICE 'failed to "
            "authenticate as' and the InvalidPassword / InvalidAccountID / FailedACL event "
            "in its security log ('logger add channel security.log security'); 'manager "
            f"show user {username}' shows the permit/deny"
        )
    if failure == "in_use":
        return (
            f"login as {username!r}: Login Already In Use - another session of this "
            "user is logged in (a running exporter counts too) and the user has "
            "allowmultiplelogin = no: give the exporter its own manager user, or set "
            "allowmultiplelogin = yes for it"
        )
    return f"login as {username!r}: {_printable(message or '(no message)')}"


async def _check_commands(
    cfg: ServerConfig, session: _Session, report: ServerReport
) -> frozenset[str] | None:
    """Step ``commands``: the actions ``ListCommands`` lists (lower case), or None where it
    is not answered (a very old Asterisk: the exporter then tries each action)."""
    timeout = max(cfg.connect_timeout, 2.0)
    try:
        result = await session.request("ListCommands", timeout)
    except (TimeoutError, _Closed):
        report.add(INFO, "commands: no answer to ListCommands; the exporter tries each action")
        return None
    listed = polls.parse_commands(result.response) if result.ok else frozenset()
    if not listed:
        why = _printable((result.response.get("Message") or "no actions listed").strip())
        report.add(INFO, f"commands: ListCommands: {why}; the exporter tries each action")
        return None
    report.add(OK, f"commands: ListCommands lists {len(listed)} actions for {cfg.username!r}")
    for write_class, actions, buys in WRITE_CLASSES:
        _report_class(cfg, report, listed, (write_class, actions, buys))
    return listed


def _report_class(
    cfg: ServerConfig,
    report: ServerReport,
    listed: frozenset[str],
    group: tuple[str, tuple[str, ...], str],
) -> None:
    """One line per write class group: allowed, or what is missing and why."""
    write_class, actions, buys = group
    missing = [a for a in actions if a.lower() not in listed]
    if not missing:
        report.add(OK, f"commands: {', '.join(actions)} allowed ({write_class}: {buys})")
        return
    absent = [a for a in missing if not _module_loaded(a, listed)]
    refused = [a for a in missing if a not in absent]
    if absent:
        modules = sorted({_module_of(a) for a in absent})
        report.add(
            INFO,
            f"commands: {', '.join(absent)} not available: {', '.join(modules)} not loaded "
            "(nothing to poll; the exporter never sends them)",
        )
    if refused:
        caution = (
            " (system also allows ModuleLoad, DBPut, DialplanExtensionAdd...: grant it knowingly)"
            if write_class == "system"
            else ""
        )
        report.add(
            WARN,
            f"commands: {', '.join(refused)} not allowed for {cfg.username!r} - write class "
            f"{write_class} buys {buys}: add it to 'write' of [{cfg.username}] in manager.conf, "
            f"then 'manager reload'{caution}",
        )


def _module_of(action: str) -> str:
    lower = action.lower()
    return next((module for prefix, module in _MODULES if lower.startswith(prefix.lower())), "")


def _module_loaded(action: str, listed: frozenset[str]) -> bool:
    """Whether the module of ``action`` is loaded: another of its actions is listed (the
    core and app_queue are judged by the write class alone)."""
    module = _module_of(action)
    return not module or any(_module_of(name) == module for name in listed)


async def _check_actions(
    cfg: ServerConfig,
    session: _Session,
    report: ServerReport,
    allowed: frozenset[str] | None = None,
) -> dict[str, ActionResult] | None:
    """Step ``action``: the answers of the allowed actions, or None if the session stopped.
    An action ``allowed`` (ListCommands) does not list is reported, not sent."""
    results: dict[str, ActionResult] = {}
    action_timeout = max(cfg.connect_timeout, 2.0)
    for name in CORE_ACTIONS:
        if allowed is not None and name.lower() not in allowed:
            report.fail(
                f"action {name}: not in ListCommands for {cfg.username!r} - the user lacks a "
                f"write class for it: add 'write = reporting' (or system) to [{cfg.username}] "
                "in manager.conf, then 'manager reload'",
                EXIT_PERMISSION,
            )
            continue
        listed = name == "CoreShowChannels"
        complete = "CoreShowChannelsComplete" if listed else None
        items = ("CoreShowChannel",) if listed else ()
        started = time.monotonic()
        try:
            result = await session.request(name, action_timeout, complete, items)
        except TimeoutError:
            report.fail(
                f"action {name}: no answer within {action_timeout:g} s - Asterisk is "
                "overloaded, or the session is stuck",
                EXIT_OTHER,
            )
            return None
        except _Closed:
            report.fail(
                f"action {name}: Asterisk closed the session - it is shutting down, or it "
                "dropped this client",
                EXIT_OTHER,
            )
            return None
        elapsed = time.monotonic() - started
        if result.ok or (result.response.get("Response") or "").lower() == "pong":
            results[name] = result
            report.add(OK, f"action {name}: allowed{_action_detail(name, result)} ({_ms(elapsed)})")
        else:
            _report_refused(cfg, report, name, result.response)
    return results


def _report_refused(cfg: ServerConfig, report: ServerReport, name: str, response: Message) -> None:
    message = (response.get("Message") or "(no message)").strip()
    kind = failure_kind(response)
    if kind == "permission":
        report.fail(
            f"action {name}: Permission denied - the user lacks a write class for it: add "
            f"'write = reporting' (or system) to [{cfg.username}] in manager.conf, then "
            "'manager reload'",
            EXIT_PERMISSION,
        )
    elif kind == "unknown_action":
        report.fail(
            f"action {name}: {_printable(message)} - this Asterisk does not provide it",
            EXIT_PERMISSION,
        )
    else:
        report.fail(f"action {name}: {_printable(message)}", EXIT_OTHER)


async def _check_events(
    cfg: ServerConfig,
    session: _Session,
    report: ServerReport,
    logged_in_at: float,
    events_wait: float,
) -> Message | None:
    """Step ``events`` (the read classes): the FullyBooted event, if it came in time."""
    deadline = logged_in_at + events_wait
    with contextlib.suppress(TimeoutError, _Closed):
        while not any(m.name == "FullyBooted" for _, m in session.events):
            await session.read(deadline)
    booted = next((m for _, m in session.events if m.name == "FullyBooted"), None)
    classes = sorted(
        {
            part.strip()
            for _, m in session.events
            for part in (m.get("Privilege") or "").split(",")
            if part.strip() and part.strip() != "all"
        }
    )
    seen = f"{len(session.events)} events" + (f", classes {','.join(classes)}" if classes else "")
    if booted is not None:
        report.add(OK, f"events: FullyBooted received ({seen}): read class 'system' works")
    elif session.events:
        report.add(
            WARN,
            f"events: no FullyBooted within {events_wait:g} s ({seen}) - add 'system' to the "
            f"read classes of [{cfg.username}] (read = system,call,security); without it "
            "restarts and reloads are seen from CoreStatus only. (Or Asterisk is still booting.)",
        )
    else:
        report.fail(
            f"events: none within {events_wait:g} s, not even FullyBooted - the read classes "
            f"of [{cfg.username}] let nothing through: set 'read = system,call,security' in "
            "manager.conf (and check its eventfilter lines), then 'manager reload'; without "
            "call events the exporter counts no calls",
            EXIT_PERMISSION,
        )
    return booted


def _action_detail(name: str, result: ActionResult) -> str:
    response, items, complete = result.response, result.items, result.complete
    if name == "CoreSettings":
        version = response.get("AsteriskVersion") or "?"
        system = response.get("SystemName") or ""
        return f", Asterisk {_printable(version)}" + (
            f", system {_printable(system)!r}" if system else ""
        )
    if name == "CoreShowChannels":
        count = complete.get("ListItems") if complete is not None else None
        return f", {count if count is not None else len(items)} channels"
    return ""


def _summary(results: dict[str, ActionResult], booted: Message | None) -> str:
    now = time.time()
    parts: list[str] = []
    channels = results.get("CoreShowChannels")
    if channels is not None:
        items, complete = channels.items, channels.complete
        listed = complete.get("ListItems") if complete is not None else None
        count = int(listed) if listed is not None and listed.isdigit() else len(items)
        calls = len({m.get("Linkedid") or m.get("Uniqueid") or str(i) for i, m in enumerate(items)})
        parts.append(f"{count} active channels in {calls} calls")
    else:
        parts.append("active channels unknown (CoreShowChannels not allowed)")
    status = results.get("CoreStatus")
    status_msg = status.response if status is not None else None
    uptime = to_float(booted.get("Uptime")) if booted is not None else None
    reload_age = to_float(booted.get("LastReload")) if booted is not None else None
    if uptime is None and status_msg is not None:
        started = local_timestamp(
            status_msg.get("CoreStartupDate"), status_msg.get("CoreStartupTime")
        )
        uptime = now - started if started is not None else None
    if reload_age is None and status_msg is not None:
        reloaded = local_timestamp(
            status_msg.get("CoreReloadDate"), status_msg.get("CoreReloadTime")
        )
        reload_age = now - reloaded if reloaded is not None else None
    if uptime is not None:
        since = datetime.fromtimestamp(now - uptime).strftime("%Y-%m-%d %H:%M:%S")
        parts.append(f"Asterisk up {human_duration(uptime)} (since {since})")
    else:
        parts.append("Asterisk uptime unknown")
    if reload_age is not None:
        parts.append(f"last reload {human_duration(reload_age)} ago")
    if status_msg is not None and status_msg.get("CoreProcessedCalls"):
        parts.append(f"{_printable(status_msg.get('CoreProcessedCalls') or '')} calls processed")
    return ", ".join(parts)


# ------------------------------------------------------------------------------ entry points


async def check_servers(
    servers: Sequence[ServerConfig],
    out: TextIO,
    *,
    events_wait: float = EVENTS_WAIT,
    preamble: Sequence[str] = (),
) -> int:
    """Check every server concurrently, print the reports in order; return the exit code."""
    tasks = [asyncio.create_task(check_server(s, events_wait=events_wait)) for s in servers]
    code = EXIT_OK
    failed: list[str] = []
    warned = 0
    for line in preamble:
        print(f"{WARN} {line}", file=out)
    for task in tasks:
        report = await task
        print(report.render(), file=out, flush=True)
        warned += report.warnings
        if report.exit_code != EXIT_OK:
            failed.append(report.server.name)
            if code == EXIT_OK:
                code = report.exit_code
    total = len(servers)
    if failed:
        names = ", ".join(failed)
        print(f"FAILED: {len(failed)} of {total} servers ({names}); exit {code}", file=out)
    else:
        extra = f" ({warned} warnings)" if warned else ""
        print(f"OK: {total} of {total} servers passed{extra}", file=out)
    return code


def build_check_parser() -> argparse.ArgumentParser:
    """The exporter's flags (:mod:`ami_exporter.config.flags`) and ``--check.events-wait``."""
    parser = build_arg_parser(__version__)
    parser.prog = "ami-exporter check"
    parser.epilog = None
    parser.description = (
        "Diagnose the AMI connection to each configured server (same flags and config file as "
        "the exporter) and exit 0 when all is well. Exit codes: 1 other failure, 2 bad flags "
        "or config, 3 cannot connect, 4 not AMI, 5 login failed, 6 permissions."
    )
    parser.add_argument(
        "--check.events-wait",
        dest="check_events_wait",
        default=str(EVENTS_WAIT),
        metavar="SECONDS",
        help="how long to wait for FullyBooted and other events after Login (default 2)",
    )
    return parser


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    """``ami-exporter check [flags]``: return the process exit code."""
    parser = build_check_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    warnings: list[str] = []
    warn: Callable[[str], None] = warnings.append
    try:
        if args.demo:
            raise ConfigError("--demo: check a real server (or run the exporter with --demo)")
        events_wait = positive_seconds(args.check_events_wait, "--check.events-wait")
        config = prepare(args, dict(os.environ), warn=warn).config
    except ConfigError as exc:
        print(f"ami-exporter check: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    stream = out if out is not None else sys.stdout
    try:
        return asyncio.run(
            check_servers(config.servers, stream, events_wait=events_wait, preamble=warnings)
        )
    except KeyboardInterrupt:
        return 130
