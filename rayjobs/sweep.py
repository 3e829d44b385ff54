"""The sweep's command: ``python rayjobs/sweep.py --preset smoke``, ``ray submit cluster.yaml rayjobs/sweep.py -- --preset paper``.

A script, not a module: ``ray submit`` copies this one file to the head node and runs it there, so it only calls the
driver (rayjobs.tuning.driver, where the sweep lives) of the installed package (``pip install -e .``, as cluster.yaml
does on every node). ``python rayjobs/sweep.py --help`` lists the flags.
"""

import sys

try:
    from rayjobs.tuning.driver import main
except ModuleNotFoundError as exc:
    if exc.name not in ("rayjobs", "rankcse"):
        raise
    print(
        f"sweep: error: the rankcse package is not installed in {sys.executable}; run `pip install -e .` in the checkout", file=sys.stderr
    )
    sys.exit(2)

if __name__ == "__main__":
    sys.exit(main())
