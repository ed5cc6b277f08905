"""``python -m fusionaudio.infer``."""

import sys

from fusionaudio.infer.cli import main

if __name__ == "__main__":
    sys.exit(main())
