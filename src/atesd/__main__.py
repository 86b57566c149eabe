"""`python -m atesd …` runs the same command line as `atesd …`."""

import sys

from atesd.cli import main

sys.exit(main())
