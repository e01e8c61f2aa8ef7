"""`python -m saeprobe.sae train|eval|export`; see saeprobe.sae.cli."""

import sys

from saeprobe.sae.cli import main

sys.exit(main())
