"""``python -m rayjobs.local_cluster up|status|address|down``: a short name kept for users; the code is rayjobs.cluster.local_cluster."""

import sys

from rayjobs.cluster.local_cluster import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
