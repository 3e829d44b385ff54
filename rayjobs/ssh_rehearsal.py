"""``python -m rayjobs.ssh_rehearsal``: a short name kept for users; the code is rayjobs.cluster.ssh_rehearsal."""

import sys

from rayjobs.cluster.ssh_rehearsal import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
