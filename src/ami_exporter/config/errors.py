"""The one error type of configuration: a bad flag, environment variable or file."""

from __future__ import annotations


class ConfigError(Exception):
    """A bad flag, environment variable or configuration file: reported in one line, exit 2."""
