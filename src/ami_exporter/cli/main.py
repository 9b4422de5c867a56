"""``ami-exporter``: dispatch to the exporter (``--demo`` included) or to ``check``.

* ``ami-exporter [flags]`` runs the exporter (:mod:`ami_exporter.cli.serve`);
* ``ami-exporter check [same flags]`` diagnoses each server once (:mod:`ami_exporter.cli.check`);
* ``--version`` prints the version, ``--help`` the flags (:mod:`ami_exporter.config.flags`).

A bad flag or configuration prints one line on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from ami_exporter import __version__
from ami_exporter.cli import check
from ami_exporter.cli.logsetup import setup_logging
from ami_exporter.cli.prepare import prepare
from ami_exporter.cli.reload import ReloadSource
from ami_exporter.cli.serve import serve
from ami_exporter.config import flags
from ami_exporter.config.errors import ConfigError

__all__ = ["build_arg_parser", "main"]

log = logging.getLogger("ami_exporter")

EXIT_USAGE = 2


def build_arg_parser() -> argparse.ArgumentParser:
    """The exporter's flags (the same as ``check``'s, but for ``--check.*``)."""
    return flags.build_arg_parser(__version__)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["check"]:
        return check.main(argv[1:])
    args = build_arg_parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        prepared = prepare(args, dict(os.environ), warn=log.warning)
    except ConfigError as exc:
        print(f"ami-exporter: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # Mask the secrets in every log line, in case a library ever echoes one.
    setup_logging(args.log_level, args.log_format, [s.secret for s in prepared.config.servers])
    try:
        reload = ReloadSource(args, dict(os.environ))  # what SIGHUP re-reads, and how
        return asyncio.run(serve(prepared.config, prepared.web, demo=args.demo, reload=reload))
    except KeyboardInterrupt:  # pragma: no cover - signal arrived before the handler was set
        return 0
