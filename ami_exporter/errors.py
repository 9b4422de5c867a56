"""Exception types shared by the configuration loader and the AMI client."""

from __future__ import annotations


class AMIExporterError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(AMIExporterError):
    """A bad flag, environment variable or configuration file: reported in one line, exit 2."""


class AMIConnectionError(AMIExporterError):
    """Reaching the AMI port failed before login; ``reason`` is the metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class AMILoginError(AMIExporterError):
    """Login was refused or not answered; ``reason`` is the metric label (auth, timeout, error)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class AMISessionLost(AMIExporterError):
    """A logged-in session ended; ``reason`` is the metric label (eof, shutdown, ...)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
