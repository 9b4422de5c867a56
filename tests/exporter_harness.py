"""Compatibility names for tests/test_profiles.py; new code imports ``helpers`` directly."""

from __future__ import annotations

from helpers import Exporter, Samples, running_exporter, server_config, value, wait_for

__all__ = ["Exporter", "Samples", "running_exporter", "server_config", "value", "wait_for"]
