"""Why an AMI session could not start or ended: each carries the metric label as ``reason``."""

from __future__ import annotations


class AMIConnectionError(Exception):
    """Reaching the AMI port failed before login; ``reason`` is the metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class AMILoginError(Exception):
    """Login was refused or not answered; ``reason`` is the metric label (auth, timeout, error)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class AMISessionLost(Exception):
    """A logged-in session ended; ``reason`` is the metric label (eof, shutdown, ...)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
