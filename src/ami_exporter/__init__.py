"""ami-exporter: a Prometheus exporter for the Asterisk Manager Interface."""

from importlib.metadata import PackageNotFoundError, version

try:
    # pyproject.toml is the one place the version is written.
    __version__ = version("ami-exporter")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"
