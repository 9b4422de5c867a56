"""``python -m ami_exporter``: the same entry point as the ``ami-exporter`` command."""

import sys

from ami_exporter.cli.main import main

sys.exit(main())
