"""The health of one server's AMI session, as the client reports it.

The client writes no field: it reports what happened to its connection through the
``record_*`` methods of :class:`~ami_exporter.state.server.ServerState`, which land here.
"""

from __future__ import annotations

from typing import Final

from ami_exporter.state.clock import Clock

CONNECTION_ERROR_REASONS: Final = ("refused", "timeout", "unreachable", "tls", "other")
LOGIN_FAILURE_REASONS: Final = ("auth", "timeout", "error")
DISCONNECT_REASONS: Final = ("eof", "shutdown", "ping_timeout", "error")
# last_error carries text from the server (a login error's Message): shown, never unbounded.
MAX_ERROR_LENGTH: Final = 1024
# Why a list action's answer was not used whole: more items than the session keeps
# (``truncated``), no ``...Complete`` within the action's timeout (``timeout``), or the session
# ended while it was in flight (``lost``).
LIST_INCOMPLETE_REASONS: Final = ("truncated", "timeout", "lost")
# Label sets shown at 0 from the start: the resync's list, which alerts care about most.
_LIST_ACTIONS_SHOWN: Final = ("CoreShowChannels",)


class ConnectionHealth:
    """Up/down, connection attempts and failures by reason, ping, malformed input, errors."""

    def __init__(self, clock: Clock) -> None:
        self._time = clock.time
        self.up = False
        self.ever_logged_in = False
        self.state_since = clock.time()  # when ``up`` last changed (or this state was made)
        self.connection_attempts = 0
        self.connection_errors: dict[str, int] = dict.fromkeys(CONNECTION_ERROR_REASONS, 0)
        self.login_failures: dict[str, int] = dict.fromkeys(LOGIN_FAILURE_REASONS, 0)
        self.disconnects: dict[str, int] = dict.fromkeys(DISCONNECT_REASONS, 0)
        self.last_event_timestamp: float | None = None
        self.ping_rtt: float | None = None
        self.malformed = 0
        # (action, reason) -> list answers not used whole; actions are the client's own names
        self.list_actions_incomplete: dict[tuple[str, str], int] = {
            (action, reason): 0
            for action in _LIST_ACTIONS_SHOWN
            for reason in LIST_INCOMPLETE_REASONS
        }
        self.last_error = ""  # human-readable, for the landing page and logs; never a secret
        # The last non-empty last_error and when it was set: kept after the session recovers,
        # for the status page (a login clears last_error).
        self.last_problem = ""
        self.last_problem_timestamp: float | None = None

    def _set_error(self, text: str) -> None:
        if len(text) > MAX_ERROR_LENGTH:
            text = text[: MAX_ERROR_LENGTH - 1] + "\u2026"
        self.last_error = text
        if text:
            self.last_problem = text
            self.last_problem_timestamp = self._time()

    def _set_up(self, up: bool) -> None:
        if up != self.up:
            self.state_since = self._time()
        self.up = up
        if up:
            self.ever_logged_in = True

    def record_connect_attempt(self) -> None:
        self.connection_attempts += 1

    def record_connect_error(self, reason: str, detail: str) -> None:
        """Reaching the AMI port failed (``reason`` is the metric label)."""
        self.connection_errors[reason] = self.connection_errors.get(reason, 0) + 1
        self._set_error(f"connection {reason}: {detail}")

    def record_login_failure(self, reason: str, detail: str) -> None:
        self.login_failures[reason] = self.login_failures.get(reason, 0) + 1
        self._set_error(f"login {reason}: {detail}")

    def record_session_up(self) -> None:
        """Logged in: the session is up and the last error is cleared."""
        self._set_up(True)
        self._set_error("")

    def record_session_down(self) -> None:
        self._set_up(False)
        self.ping_rtt = None  # the round trip of a session that is gone: none until a Pong

    def record_disconnect(self, reason: str, detail: str) -> None:
        """A logged-in session ended (not by our own Logoff)."""
        self.disconnects[reason] = self.disconnects.get(reason, 0) + 1
        self._set_error(f"disconnected ({reason}): {detail}")

    def record_ping(self, rtt: float) -> None:
        self.ping_rtt = rtt

    def record_malformed(self, count: int) -> None:
        self.malformed += count

    def record_list_incomplete(self, action: str, reason: str) -> None:
        """A list action's answer was cut, timed out or lost (``reason``, a metric label)."""
        key = (action, reason)
        self.list_actions_incomplete[key] = self.list_actions_incomplete.get(key, 0) + 1

    def record_received(self) -> None:
        """Messages arrived (any kind, Ping answers included): the last-message timestamp."""
        self.last_event_timestamp = self._time()
