"""``python -m ami_simulator``: the same entry point as the ``ami-simulator`` command."""

import sys

from ami_simulator.server import main

sys.exit(main())
