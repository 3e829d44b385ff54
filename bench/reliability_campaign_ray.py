"""Issue 23's Ray-side campaign: re-run every case and print (case, exit status, last line, verdict) as a table.

    python bench/reliability_campaign_ray.py                 # everything (starts a local Ray cluster and sweeps)
    python bench/reliability_campaign_ray.py --quick         # no Ray: aggregate, state files, dry runs
    python bench/reliability_campaign_ray.py --kills 20      # SIGKILLs of `rankcse aggregate` (default 20)

The cases are in bench/reliability_cases_ray.py. Run it on main and on a fix branch to compare.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reliability_cases_ray import Result, aggregate_cases, local_cluster_cases, sigkill_campaign, sweep_cases  # noqa: E402


def _row(r: Result) -> str:
    cells = [r.case, str(r.rc), r.last.replace("|", "\\|")[:220], r.verdict]
    return "| " + " | ".join(cells) + " |"


def main() -> int:
    """Run the campaign; print the table (and the SIGKILL counts)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="skip the cases that start Ray")
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs of `rankcse aggregate` (0: skip)")
    p.add_argument("--only", choices=("aggregate", "local_cluster", "sweep", "sigkill"), action="append", help="run only these groups")
    args = p.parse_args()
    groups = args.only or ["aggregate", "local_cluster", "sweep", "sigkill"]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    print(f"# issue 23, Ray side: campaign at {commit}\n")
    print("| case | exit | last line | verdict |")
    print("|---|---|---|---|")
    # short folder: Ray's socket paths under the cluster's RAY_TMPDIR must stay below 107 bytes
    with tempfile.TemporaryDirectory(prefix="rc23-", dir="/tmp") as tmp:
        scratch = Path(tmp)
        cases = []
        if "aggregate" in groups:
            cases.append(aggregate_cases(scratch))
        if "local_cluster" in groups:
            cases.append(local_cluster_cases(scratch, with_cluster=not args.quick))
        if "sweep" in groups:
            cases.append(sweep_cases(scratch, with_ray=not args.quick))
        for group in cases:
            for result in group:
                print(_row(result), flush=True)
        if "sigkill" in groups and args.kills > 0:
            report = sigkill_campaign(scratch, kills=args.kills, log=lambda line: print(f"  {line}", file=sys.stderr, flush=True))
            o = report["outcomes"]
            verdict = "never neither" if o["neither"] == 0 else f"NEITHER {o['neither']} time(s)"
            print(
                _row(
                    Result(
                        f"aggregate SIGKILLed {args.kills}x over an earlier output (write phase {report['write_phase_s']:.2f}s)",
                        "-9",
                        f"previous whole {o['previous']}, new whole {o['new']}, neither {o['neither']}",
                        verdict,
                    )
                )
            )
            print(f"\nSIGKILL details: {json.dumps(report, default=str)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
