"""ami-exporter: a Prometheus exporter for the Asterisk Manager Interface."""

__version__ = "0.1.0"
