"""Issue 23 cases of the Ray side (`rankcse aggregate`, `rayjobs.local_cluster`, the sweep's flags), for the campaign.

``cases(scene)`` follows bench/reliability_campaign.py's protocol (every ``reliability_cases_*.py`` defines it);
``python bench/reliability_campaign.py --part ray`` runs just these. Nothing is mocked: aggregations read synthetic
trial folders (known series, no training), the local cluster is a real Ray head with its own RAY_TMPDIR, the
sweeps are real driver runs, and the SIGKILL case kills real ``rankcse aggregate`` processes.

    python bench/reliability_cases_ray.py sigkill SCRATCH [KILLS]   # the SIGKILL harness alone (one line out)
    python bench/reliability_cases_ray.py cluster FOLDER            # the corrupted-state sequence on a real cluster
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve()
STEPS = list(range(0, 110, 10))

try:  # the shared campaign's case type, when it is there
    from reliability_campaign import Case
except ImportError:

    @dataclass
    class Case:  # the same fields as reliability_campaign.Case
        """One command: ``make(work)`` returns its argv; ``expect`` the good exit status; ``check(work)`` a verdict."""

        name: str
        make: Callable[[Path], list[str]]
        expect: int
        check: Callable[[Path], str] | None = None
        timeout: float = 300.0


# -- scratch data -------------------------------------------------------------------------------------------


def tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the sha256 of its bytes (empty when the folder is absent)."""
    if not folder.is_dir():
        return {}
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _records(peak: int, best: int, shift: float) -> list[dict]:
    rows = []
    for s in STEPS:
        rank = 20 + 0.3 * min(s, peak) - 0.12 * max(0, s - peak) - shift
        dev = 0.70 + 0.0008 * min(s, best) - 0.0005 * max(0, s - best) + 0.001 * shift
        rows.append({"step": s, "stsb_dev": dev, "probe/erank_vne": rank, "probe/energy_rank_99": 2 * rank, "loss/total": 0.1})
    return rows


def _final(shift: float) -> dict:
    scores = {k: 0.70 + 0.01 * shift + 0.001 * i for i, k in enumerate(("sts12", "sts13", "sts14", "sts15", "sts16", "stsb", "sickr"))}
    return {**scores, "avg": sum(scores.values()) / len(scores), "steps": STEPS[-1]}


def base_config(**overrides) -> dict:
    """A resolved-looking rankcse config (the keys `rankcse train` records)."""
    cfg = {"method": "simcse", "method_args": {}, "model": "default", "batch_size": 8, "learning_rate": 3e-5, "max_steps": STEPS[-1]}
    cfg.update({"eval_every": 10, "seed": 0, "rr_coef": 0.0, "rr_schedule": "always", "train_file": None})
    cfg.update({"num_threads": 1, "log_every": 10, "device": "cpu"})
    cfg.update(overrides)
    return cfg


def write_sweep(root: Path, seeds: int = 3) -> Path:
    """A sweep's experiment folder (Tune layout): simcse x RR 0 / 0.1 always / 0.1 after_peak x ``seeds`` seeds, all completed."""
    (root / ".rankcse").mkdir(parents=True)
    grid = {"method": ["simcse"], "rr_coef": [0.0, 0.1], "rr_schedule": ["always", "after_peak"], "seed": list(range(seeds))}
    (root / ".rankcse" / "sweep.json").write_text(json.dumps({"spec": {"name": root.name, "grid": grid, "train": {"model": "default"}}}))
    n = 0
    for rr, schedule in ((0.0, "always"), (0.1, "always"), (0.1, "after_peak")):
        for seed in range(seeds):
            cell = {"method": "simcse", "rr_coef": rr, "rr_schedule": schedule, "seed": seed}
            folder = root / f"t{n:04d}_{n:05d}_simcse_rr{rr:g}_{schedule}_seed{seed}"
            (folder / "run").mkdir(parents=True)
            (folder / "params.json").write_text(json.dumps(cell))
            shift = 30 * rr + seed + (0.5 if schedule == "after_peak" else 0)
            records = _records(40 + 10 * seed, 80 - 5 * seed, shift)
            (folder / "run" / "config.json").write_text(json.dumps(base_config(**cell)))
            (folder / "run" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
            (folder / "run" / "final.json").write_text(json.dumps(_final(shift)))
            rows = [{**r, "kind": "eval", "trial_id": f"t{n:04d}_{n:05d}"} for r in records]
            (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
            n += 1
    return root


def write_plain_runs(root: Path) -> Path:
    """Three `rankcse train` output folders, seed 0 of simcse: batch 8, batch 16, and batch 8 again (only the threads differ)."""
    for name, cfg, shift in (
        ("bs8", base_config(), 0.0),
        ("bs16", base_config(batch_size=16), 1.0),
        ("bs8-again", base_config(num_threads=4), 0.0),
    ):
        folder = root / name
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(cfg))
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _records(40, 80, shift)))
        (folder / "final.json").write_text(json.dumps(_final(shift)))
    return root


def _py_env() -> dict[str, str]:
    """This process's environment (the campaign's PYTHONPATH names the checkout under test)."""
    return dict(os.environ)


def aggregate_argv(exp: Path, out: Path, *extra: str, figures: bool = False) -> list[str]:
    """``rankcse aggregate`` on ``exp`` into ``out`` (as a subprocess command line)."""
    flags = [] if figures else ["--no-figures"]
    return [sys.executable, "-m", "rankcse", "aggregate", str(exp), "--output-dir", str(out), "--n-boot", "20", *flags, *extra]


# -- the SIGKILL harness ------------------------------------------------------------------------------------


def _started_writing(folder: Path, stamps: dict[str, int]) -> bool:
    """Whether the aggregation has started writing: a staging folder beside ``folder``, or a file of it changed."""
    if any(p.name.startswith(f".{folder.name}.") for p in folder.parent.iterdir()) or not folder.exists():
        return True
    for p in folder.iterdir():
        try:
            if p.name.startswith(".") or p.stat().st_mtime_ns != stamps.get(p.name):
                return True
        except FileNotFoundError:
            return True
    return False


def _aggregate_child(exp: Path, out: Path, figures: bool) -> int:
    """Fork a process that runs the aggregation (this process has imported it already); return its PID."""
    import rayjobs.analysis.figures  # noqa: F401  (imported once here, not in every child)
    import rayjobs.analysis.report  # noqa: F401
    from rayjobs.analysis.aggregate import aggregate

    pid = os.fork()
    if pid == 0:  # the child: the aggregation, then out without Python's shutdown
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1), os.dup2(devnull, 2)
            aggregate(exp, out, n_boot=20, figures=figures)
            os._exit(0)
        except BaseException:
            os._exit(1)
    return pid


def sigkill_campaign(scratch: Path, kills: int = 20, seed: int = 0, figures: bool = True, log: Callable[[str], None] | None = None) -> dict:
    """SIGKILL ``rankcse aggregate`` over an earlier output at random points of its writing; count what the output holds.

    The earlier output aggregates seeds 0-1 (``--only seed=0,1``), the new one every seed. After each kill the output
    folder must equal one of the two exactly (names and bytes). Each aggregation is a process forked from this one
    (which imported the aggregator once, so a kill costs no start-up); the kill time is uniform over the write phase
    (from the first change beside or in the output folder to the exit, timed by an uninterrupted run first), so the
    kills land while files are written.
    """
    exp = scratch / "sweep"
    if not exp.exists():
        write_sweep(exp, seeds=4)
    # The three folders share one name: the report is titled by its folder's name.
    prev, new, out = scratch / "prev" / "out", scratch / "new" / "out", scratch / "out"
    for folder in (prev, new):
        shutil.rmtree(folder, ignore_errors=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
    env = _py_env()
    for folder, extra in ((prev, ["--only", "seed=0,1"]), (new, [])):
        done = subprocess.run(aggregate_argv(exp, folder, *extra, figures=figures), env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
    prev_tree, new_tree = tree(prev), tree(new)
    assert prev_tree != new_tree and prev_tree and new_tree
    rng = random.Random(seed)
    outcomes = {"previous": 0, "new": 0, "neither": 0}
    window = 0.0
    details = []
    for i in range(kills + 1):  # run 0 is uninterrupted: it times the write phase
        shutil.rmtree(out, ignore_errors=True)
        for p in out.parent.glob(f".{out.name}.*"):
            shutil.rmtree(p, ignore_errors=True)
        shutil.copytree(prev, out)
        stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
        pid = _aggregate_child(exp, out, figures)
        while os.waitpid(pid, os.WNOHANG) == (0, 0) and not _started_writing(out, stamps):
            time.sleep(0.001)
        started = time.monotonic()
        if i == 0:
            _, status = os.waitpid(pid, 0)
            window = time.monotonic() - started
            assert status == 0 and tree(out) == new_tree, "an uninterrupted run over the earlier output differs from a fresh one"
            continue
        delay = rng.uniform(0, window * 1.1)
        time.sleep(delay)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status)
        if not killed:  # the load eased: draw the next kills from the shorter write phase this run took
            window = min(window, time.monotonic() - started)
        now = tree(out)
        kind = "previous" if now == prev_tree else ("new" if now == new_tree else "neither")
        outcomes[kind] += 1
        details.append((round(delay, 3), "killed" if killed else "finished", kind))
        if log:
            log(f"kill {i:2d} at +{delay:.3f}s of the write phase: {'killed' if killed else 'finished first'}, output is {kind}")
    leftovers = sorted(p.name for p in out.parent.glob(f".{out.name}.*"))
    # the next aggregation over a killed one (a fresh `rankcse aggregate`) finishes and clears what the kill left
    rc = subprocess.run(aggregate_argv(exp, out, figures=figures), env=env, capture_output=True).returncode
    after = {"rc": rc, "whole": tree(out) == new_tree, "leftovers": sorted(p.name for p in out.parent.glob(f".{out.name}.*"))}
    killed = sum(1 for d in details if d[1] == "killed")
    return {
        "outcomes": outcomes,
        "killed": killed,
        "write_phase_s": window,
        "details": details,
        "leftovers_after_kills": leftovers,
        "rerun": after,
    }


# -- local cluster ------------------------------------------------------------------------------------------


def _env_of(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return {}
    return dict(e.decode(errors="replace").split("=", 1) for e in raw if b"=" in e)


def pids_with_tmpdir(tmpdir: Path) -> list[int]:
    """Live processes whose RAY_TMPDIR is ``tmpdir`` (every process of a local cluster started there)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _env_of(int(entry.name)).get("RAY_TMPDIR") == str(tmpdir):
            try:
                if Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    out.append(int(entry.name))
            except OSError:
                pass
    return sorted(out)


def heads(tmpdir: Path) -> int:
    """How many Ray heads (``ray start --head``) run with this RAY_TMPDIR."""
    n = 0
    for pid in pids_with_tmpdir(tmpdir):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        n += b"ray.scripts.scripts" in cmd and b"start" in cmd and b"--head" in cmd
    return n


def _lc(folder: Path, *args: str, timeout: float = 240) -> tuple[int, str, str]:
    env = {**_py_env(), "RANKCSE_LOCAL_CLUSTER_DIR": str(folder)}
    done = subprocess.run([sys.executable, "-m", "rayjobs.local_cluster", *args], env=env, capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
    return done.returncode, (lines[-1] if lines else ""), done.stdout + done.stderr


def cluster_sequence(folder: Path) -> int:
    """Up, corrupt state.json, then status / up / down; print one line saying what each saw; 0 when all went right."""
    tmpdir = folder / "ray"
    state = folder / "state.json"
    notes, ok = [], True
    try:
        rc, last, _ = _lc(folder, "up", "--max-workers", "1", "--cpus-per-worker", "1", "--gpus-per-worker", "0")
        if rc != 0:
            print(f"up failed: {last}")
            return 1
        n = len(pids_with_tmpdir(tmpdir))
        state.write_text('{"sid": 12')
        rc, last, _ = _lc(folder, "status")
        notes.append("status: running" if rc == 0 else f"status: {last}")
        ok &= rc == 0
        state.write_text('{"sid": 12')
        rc, last, _ = _lc(folder, "up", "--max-workers", "1", "--cpus-per-worker", "1", "--gpus-per-worker", "0")
        notes.append(f"up again: {heads(tmpdir)} head(s)")
        ok &= heads(tmpdir) == 1
        state.write_text('{"sid": 12')
        rc, last, _ = _lc(folder, "down", timeout=120)
        time.sleep(1)
        left = pids_with_tmpdir(tmpdir)
        notes.append(f"down: {len(left)} of {n} processes left")
        ok &= not left
    finally:
        _lc(folder, "down", timeout=120)
        for pid in pids_with_tmpdir(tmpdir):  # only this campaign's cluster (its own RAY_TMPDIR)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    shutil.rmtree(folder, ignore_errors=True)
    print("; ".join(notes))
    return 0 if ok else 1


# -- the cases ----------------------------------------------------------------------------------------------


def cases(scene) -> list[Case]:
    """The Ray side's cases of issue 23."""

    base = Path(scene.root) / "ray_agg_base"

    def agg_base(work: Path) -> tuple[Path, Path]:
        """The synthetic sweep and an aggregation of it (made once, copied into each case)."""
        if not base.exists():
            exp = write_sweep(base / "sweep")
            done = subprocess.run(aggregate_argv(exp, base / "out"), env=scene.env, capture_output=True, text=True)
            if done.returncode != 0:
                shutil.rmtree(base)
                raise RuntimeError(f"the output to protect was not made: {done.stderr.strip().splitlines()[-1:]}")
        exp, out = work / "sweep", work / "out"
        shutil.copytree(base / "sweep", exp)
        shutil.copytree(base / "out", out)
        (work / ".before.json").write_text(json.dumps(tree(out)))
        return exp, out

    def only(value: str) -> Callable[[Path], list[str]]:
        def make(work: Path) -> list[str]:
            exp, out = agg_base(work)
            return ["rankcse", *aggregate_argv(exp, out, "--only", value)[3:]]

        return make

    def out_unchanged(work: Path) -> str:
        same = tree(work / "out") == json.loads((work / ".before.json").read_text())
        return "out unchanged" if same else "BAD: out changed"

    def plain(work: Path) -> list[str]:
        return ["rankcse", *aggregate_argv(write_plain_runs(work / "runs"), work / "out")[3:]]

    def plain_check(work: Path) -> str:
        import pandas as pd

        trials = pd.read_parquet(work / "out" / "trials.parquet")
        counts = trials["status"].value_counts().to_dict()
        good = counts == {"completed": 2, "duplicate": 1}
        return ("" if good else "BAD: ") + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))

    def lc(command: str, text: str) -> Callable[[Path], list[str]]:
        def make(work: Path) -> list[str]:
            folder = Path(f"/tmp/rc23-{os.getpid()}-{random.randrange(1 << 24):x}")  # short: Ray's socket paths
            folder.mkdir()
            (work / "lc_dir").write_text(str(folder))
            (folder / "state.json").write_text(text)
            return ["python", "-c", _with_cluster_dir(folder, ["-m", "rayjobs.local_cluster", command])]

        return make

    def no_traceback(work: Path) -> str:
        folder = Path((work / "lc_dir").read_text())
        shutil.rmtree(folder, ignore_errors=True)
        return ""

    def unrelated(command: str) -> Callable[[Path], list[str]]:
        def make(work: Path) -> list[str]:
            other = subprocess.Popen(["sleep", "600"], start_new_session=True)
            (work / "other.pid").write_text(str(other.pid))
            folder = Path(f"/tmp/rc23-{os.getpid()}-{random.randrange(1 << 24):x}")
            folder.mkdir()
            (work / "lc_dir").write_text(str(folder))
            stale = {"sid": other.pid, "address": "127.0.0.1:1", "dashboard": "http://127.0.0.1:2", "auth_mode": "disabled"}
            stale.update({"ray_tmpdir": str(folder / "ray"), "max_workers": 2, "worker": {"CPU": 2.0, "GPU": 1.0}, "started": "x"})
            (folder / "state.json").write_text(json.dumps(stale))
            return ["python", "-c", _with_cluster_dir(folder, ["-m", "rayjobs.local_cluster", command])]

        return make

    def unrelated_alive(work: Path) -> str:
        pid = int((work / "other.pid").read_text())
        alive = Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        try:
            os.kill(pid, signal.SIGKILL)  # the sleep this case started
        except ProcessLookupError:
            pass
        shutil.rmtree(Path((work / "lc_dir").read_text()), ignore_errors=True)
        return "unrelated process alive" if alive else "BAD: unrelated process killed"

    def cluster(work: Path) -> list[str]:
        folder = Path(f"/tmp/rc23-{os.getpid()}-{random.randrange(1 << 24):x}")
        folder.mkdir()
        return ["python", str(HERE), "cluster", str(folder)]

    def sigkill(work: Path) -> list[str]:
        return ["python", str(HERE), "sigkill", str(work), os.environ.get("RANKCSE_CAMPAIGN_KILLS", "20")]

    sweep_py = str(Path(scene.tree) / "rayjobs" / "sweep.py")
    sw = ["python", sweep_py, "--preset", "smoke", "--max-steps", "2", "--num-seeds", "1", "--no-aggregate"]

    def a_file(work: Path) -> Path:
        (work / "a_file").write_text("x")
        return work / "a_file"

    def no_trials(name: str) -> Callable[[Path], str]:
        return lambda work: (
            f"{sum(1 for _ in (work / name).glob('*/*/params.json'))} trials started" if (work / name).exists() else "nothing written"
        )

    ray_env = "RAY_TMPDIR"  # the sweeps that get as far as Ray start their own local one under the case's folder
    wandb_env = {"WANDB_MODE": None, "WANDB_API_KEY": None, "WANDB_SETUP_API_KEY_HOOK": None, "NETRC": "/nonexistent/netrc"}
    return [
        Case("aggregate --only rr_schedule=alwyas", only("rr_schedule=alwyas"), 2, out_unchanged),
        Case("aggregate --only rr_coef=abc", only("rr_coef=abc"), 2, out_unchanged),
        Case("aggregate --only rr_coef=0.5 (no trial has it)", only("rr_coef=0.5"), 2, out_unchanged),
        Case("aggregate --only seed=0,7 (7: no trial)", only("seed=0,7"), 2, out_unchanged),
        Case("aggregate: plain runs bs 8 / bs 16 / bs 8 again", plain, 0, plain_check),
        Case("aggregate SIGKILLed at random points (x RANKCSE_CAMPAIGN_KILLS, 20)", sigkill, 0, timeout=3600),
        *(
            Case(f"local_cluster {c} with state.json {t}", lc(c, t), 1 if c == "status" else 0, no_traceback)
            for t in ("[]", "{}", '{"sid": "abc"}')
            for c in ("status", "down")
        ),
        Case("local_cluster status, state naming an unrelated session", unrelated("status"), 1, unrelated_alive),
        Case("local_cluster down, state naming an unrelated session", unrelated("down"), 0, unrelated_alive),
        Case("local_cluster: state corrupted while the cluster runs (status/up/down)", cluster, 0, timeout=900),
        Case("sweep --dry-run --storage-path FILE", lambda w: [*sw, "--dry-run", "--storage-path", str(a_file(w))], 2),
        Case("sweep --storage-path FILE (real run)", lambda w: [*sw, "--storage-path", str(a_file(w)), "--address", "local"], 2),
        Case(
            "sweep --dry-run --resource-wait -5", lambda w: [*sw, "--dry-run", "--storage-path", str(w / "st"), "--resource-wait", "-5"], 2
        ),
        Case(
            "sweep --mlflow http://127.0.0.1:9 (unreachable)",
            lambda w: _env_argv(
                {ray_env: str(w / "ray")}, [*sw, "--storage-path", str(w / "st"), "--address", "local", "--mlflow", "http://127.0.0.1:9"]
            ),
            2,
            no_trials("st"),
            timeout=420,
        ),
        Case(
            "sweep --wandb P, no key, WANDB_MODE unset",
            lambda w: _env_argv(
                {ray_env: str(w / "ray"), **wandb_env}, [*sw, "--storage-path", str(w / "st"), "--address", "local", "--wandb", "p"]
            ),
            2,
            no_trials("st"),
            timeout=420,
        ),
    ]


def _with_cluster_dir(folder: Path, argv: list[str]) -> str:
    """``python -c`` code running ``python ARGV`` with RANKCSE_LOCAL_CLUSTER_DIR set to ``folder``."""
    return _env_argv({"RANKCSE_LOCAL_CLUSTER_DIR": str(folder)}, ["python", *argv])[2]


def _env_argv(env: dict[str, str | None], argv: list[str]) -> list[str]:
    """``python -c`` running ``argv`` (``python ...``) with ``env`` changed (None: unset), output and status passed on."""
    code = (
        "import os, subprocess, sys; env = dict(os.environ); "
        f"changes = {env!r}; "
        "[env.pop(k, None) if v is None else env.__setitem__(k, v) for k, v in changes.items()]; "
        f"sys.exit(subprocess.run([sys.executable, *{argv[1:]!r}], env=env).returncode)"
    )
    return ["python", "-c", code]


def main(argv: list[str]) -> int:
    """``sigkill SCRATCH [KILLS]`` or ``cluster FOLDER``: the composite cases, one line out."""
    if argv[:1] == ["sigkill"]:
        scratch, kills = Path(argv[1]), int(argv[2]) if len(argv) > 2 else 20
        report = sigkill_campaign(scratch, kills=kills, log=lambda line: print(line, flush=True))
        o, rerun = report["outcomes"], report["rerun"]
        print(
            f"{report['killed']} of {kills} kills mid-write ({report['write_phase_s']:.2f}s write phase): previous whole {o['previous']}, "
            f"new whole {o['new']}, "
            f"neither {o['neither']}; rerun rc {rerun['rc']}, whole {rerun['whole']}, leftovers {len(rerun['leftovers'])}"
        )
        return 0 if o["neither"] == 0 and rerun["whole"] and not rerun["leftovers"] else 1
    if argv[:1] == ["cluster"]:
        return cluster_sequence(Path(argv[1]))
    print(__doc__.strip().splitlines()[0])
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
