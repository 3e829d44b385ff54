"""``python -m rankcse`` runs the command line."""

import sys

from rankcse.cli import main

sys.exit(main())
