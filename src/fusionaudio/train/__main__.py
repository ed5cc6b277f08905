"""``python -m fusionaudio.train``."""

import sys

from fusionaudio.train.cli import main

sys.exit(main())
