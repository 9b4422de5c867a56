"""Logging in logfmt or JSON lines, one line per record, on standard error.

Records never contain secrets: the client logs actions by name only, redacts its secret from
what a server sends before it reaches state or a log, and configuration errors name files and
keys, not values. As a second line of defence every field of every record (the message, the
server, an exception's traceback) is passed through a redactor that masks the configured
secrets if they ever appear.

Text from an AMI server (banners, messages, channel names) reaches the log lines, so a record
is also made safe to print: control characters (``\\r``, ``\\n``, ESC and the C1 controls),
line and paragraph separators and bidirectional overrides are written as ``\\uXXXX`` escapes
in both formats, so a server can neither forge a log line nor recolour a terminal.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import Final

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

REDACTED: Final = "<redacted>"
# What json.dumps(ensure_ascii=False) leaves as is but a terminal or a log reader acts on:
# C0 (json escapes those itself), DEL and C1 (CSI is \x9b), soft hyphen, Arabic letter mark,
# zero-width and direction marks, line/paragraph separators, bidi embeddings, overrides and
# isolates, word joiners, the BOM, and lone surrogates (undecodable bytes).
_UNSAFE: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\xad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f"
    "\ufeff\ufff9-\ufffb\ud800-\udfff]"
)
# A logfmt value is quoted when it is empty or holds one of these, or an unsafe character.
_LOGFMT_SPECIAL: Final = re.compile('[ ="\\\\]')


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _json_string(value: str) -> str:
    """``value`` as a JSON string literal in which nothing unsafe is left raw."""
    return _UNSAFE.sub(_escape, json.dumps(value, ensure_ascii=False))


def _timestamp(record: logging.LogRecord) -> str:
    t = time.gmtime(record.created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"


class _Formatter(logging.Formatter):
    """The fields of a record, secrets masked; the subclasses write them in one line."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # Longest first: a secret that contains another is masked whole.
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def fields(self, record: logging.LogRecord) -> dict[str, str]:
        out = {"ts": _timestamp(record), "level": record.levelname.lower(), "logger": record.name}
        server = getattr(record, "server", None)
        if server is not None:
            out["server"] = self.redact(str(server))
        out["msg"] = self.redact(record.getMessage())
        if record.exc_info:
            out["error"] = self.redact(self.formatException(record.exc_info))
        return out


class LogfmtFormatter(_Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = []
        for key, value in self.fields(record).items():
            if value == "" or _LOGFMT_SPECIAL.search(value) or _UNSAFE.search(value):
                value = _json_string(value)
            parts.append(f"{key}={value}")
        return " ".join(parts)


class JSONFormatter(_Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = self.fields(record)
        return "{" + ", ".join(f'"{k}": {_json_string(v)}' for k, v in fields.items()) + "}"


def setup_logging(level: str, fmt: str, secrets: Iterable[str] = ()) -> None:
    """Log records of ``level`` and above to stderr, in ``fmt``, ``secrets`` masked."""
    handler = logging.StreamHandler(sys.stderr)
    secrets = tuple(secrets)
    handler.setFormatter(JSONFormatter(secrets) if fmt == "json" else LogfmtFormatter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
