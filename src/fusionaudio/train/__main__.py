"""``python -m fusionaudio.train``."""

import sys

from .cli import main

sys.exit(main())
