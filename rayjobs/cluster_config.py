"""``python -m rayjobs.cluster_config cluster.yaml``: a short name kept for users; the code is rayjobs.cluster.cluster_config."""

import sys

from rayjobs.cluster.cluster_config import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
