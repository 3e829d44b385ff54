"""``rankcse aggregate``: a short name kept for users; the code is rayjobs.analysis.aggregate."""

import sys

from rayjobs.analysis.aggregate import main, register_command

__all__ = ["main", "register_command"]

if __name__ == "__main__":
    sys.exit(main())
