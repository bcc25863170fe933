"""``python -m devices.sim``: run a simulated bench until SIGINT/SIGTERM."""

import sys

from .bench import main

sys.exit(main())
