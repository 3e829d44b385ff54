"""Issue 23's bad inputs and faults for the Ray side: `rankcse aggregate`, `rayjobs.local_cluster` and the sweep.

Each case runs the real command in a subprocess on a scratch folder and returns (case, exit status, last line,
verdict); the verdict says what was checked beside the exit status (an output folder left byte-identical, an
unrelated process left alive, ...). ``python bench/reliability_campaign_ray.py`` prints them as a table.
Nothing here is mocked: the aggregations read synthetic trial folders (known series, no training), the local
cluster is a real Ray head on this machine (its own RAY_TMPDIR and ports), the sweeps are real driver runs.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
STEPS = list(range(0, 110, 10))


@dataclass
class Result:
    """One case's outcome."""

    case: str
    rc: int | str
    last: str
    verdict: str = ""


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
    cfg = {
        "method": "simcse",
        "method_args": {},
        "model": "default",
        "batch_size": 8,
        "learning_rate": 3e-5,
        "max_steps": STEPS[-1],
        "eval_every": 10,
        "seed": 0,
        "rr_coef": 0.0,
        "rr_schedule": "always",
        "train_file": None,
        "num_threads": 1,
        "log_every": 10,
        "device": "cpu",
    }
    cfg.update(overrides)
    return cfg


def write_sweep(root: Path, seeds: int = 3) -> Path:
    """A sweep's experiment folder (Tune layout): simcse x RR 0 / 0.1 (always) x ``seeds`` seeds, all completed."""
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
            shift = 3 * rr * 10 + seed + (0.5 if schedule == "after_peak" else 0)
            records = _records(40 + 10 * seed, 80 - 5 * seed, shift)
            (folder / "run" / "config.json").write_text(json.dumps(base_config(**cell)))
            (folder / "run" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
            (folder / "run" / "final.json").write_text(json.dumps(_final(shift)))
            rows = [{**r, "kind": "eval", "trial_id": f"t{n:04d}_{n:05d}"} for r in records]
            (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
            n += 1
    return root


def write_plain_runs(root: Path) -> Path:
    """Three `rankcse train` output folders, seed 0 of simcse: batch 8, batch 16, and an exact repeat of batch 8."""
    for name, cfg, shift in (
        ("bs8", base_config(), 0.0),
        ("bs16", base_config(batch_size=16), 1.0),
        ("bs8-again", base_config(num_threads=4), 0.0),  # the same run (only the thread count differs)
    ):
        folder = root / name
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(cfg))
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _records(40, 80, shift)))
        (folder / "final.json").write_text(json.dumps(_final(shift)))
    return root


# -- running ------------------------------------------------------------------------------------------------


def run(argv: list[str], timeout: float = 120, env: dict[str, str | None] | None = None) -> tuple[int | str, str, str]:
    """(exit status or 'timeout after Ns', last non-empty line of stdout+stderr, all output) of a command."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}  # None: unset
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=ROOT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = (exc.stderr or b"").decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        lines = [ln for ln in (out + err).splitlines() if ln.strip()]
        return f"timeout after {timeout:g}s", (lines[-1] if lines else ""), out + err
    text = proc.stdout + proc.stderr
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return proc.returncode, (lines[-1].strip() if lines else ""), text


def aggregate_argv(exp: Path, out: Path, *extra: str, figures: bool = False) -> list[str]:
    """``rankcse aggregate`` on ``exp`` into ``out``."""
    return [
        PY,
        "-m",
        "rankcse",
        "aggregate",
        str(exp),
        "--output-dir",
        str(out),
        "--n-boot",
        "20",
        *([] if figures else ["--no-figures"]),
        *extra,
    ]


# -- aggregate ----------------------------------------------------------------------------------------------


def aggregate_cases(scratch: Path) -> Iterator[Result]:
    """`--only` typos and missing values leave the earlier output byte-identical; plain runs group by their whole config."""
    exp = write_sweep(scratch / "agg" / "sweep")
    out = scratch / "agg" / "out"
    rc, last, _ = run(aggregate_argv(exp, out))
    yield Result("aggregate: a good run (the output to protect)", rc, last)
    before = tree(out)
    for only in ("rr_schedule=alwyas", "rr_coef=abc", "rr_coef=0.5", "seed=0,7", "method=mixcse"):
        rc, last, _ = run(aggregate_argv(exp, out, "--only", only))
        same = tree(out) == before
        yield Result(f"aggregate --only {only}", rc, last, "output unchanged" if same else "OUTPUT CHANGED")
    plain = write_plain_runs(scratch / "agg" / "plain")
    pout = scratch / "agg" / "plain_out"
    rc, last, text = run(aggregate_argv(plain, pout))
    counts = next((ln for ln in text.splitlines() if ln.startswith("aggregated ")), last)
    yield Result("aggregate: plain runs batch 8 / batch 16 / batch 8 again (4 threads)", rc, counts, "expect 2 completed, 1 duplicate")


def _snapshot_changed(folder: Path, stamps: dict[str, float]) -> bool:
    """Whether the aggregation has started writing: a staging folder beside ``folder``, or a file of it changed."""
    parent = folder.parent
    if any(p.name.startswith(f".{folder.name}.") for p in parent.iterdir()):
        return True
    if not folder.exists():
        return True
    for p in folder.iterdir():
        if p.name.startswith("."):
            return True
        try:
            if p.stat().st_mtime_ns != stamps.get(p.name):
                return True
        except FileNotFoundError:
            return True
    return False


def sigkill_campaign(scratch: Path, kills: int = 20, seed: int = 0, figures: bool = True, log: Callable[[str], None] | None = None) -> dict:
    """SIGKILL ``rankcse aggregate`` over an earlier output at random points of its writing; count the outcomes.

    The earlier output is an aggregation of seeds 0-1 (``--only seed=0,1``); the new one is of every seed. After
    each kill the output folder must equal one of the two exactly (file names and bytes). The kill time is drawn
    uniformly within the write phase (from the first change beside or in the output folder to the process's exit,
    as timed by an uninterrupted run), so most kills land while files are written.
    """
    exp = scratch / "kill" / "sweep"
    if not exp.exists():
        write_sweep(exp, seeds=4)
    prev, new, out = scratch / "kill" / "prev", scratch / "kill" / "new", scratch / "kill" / "out"
    for folder in (prev, new):
        shutil.rmtree(folder, ignore_errors=True)
    assert run(aggregate_argv(exp, prev, "--only", "seed=0,1", figures=figures))[0] == 0
    assert run(aggregate_argv(exp, new, figures=figures))[0] == 0
    prev_tree, new_tree = tree(prev), tree(new)
    assert prev_tree != new_tree and prev_tree and new_tree
    rng = random.Random(seed)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    outcomes = {"previous": 0, "new": 0, "neither": 0}
    windows: list[float] = []
    details = []
    for i in range(kills + 1):  # run 0 is uninterrupted: it times the write phase
        shutil.rmtree(out, ignore_errors=True)
        for p in out.parent.glob(f".{out.name}.*"):
            shutil.rmtree(p, ignore_errors=True)
        shutil.copytree(prev, out)
        stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
        proc = subprocess.Popen(
            aggregate_argv(exp, out, figures=figures), env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        while proc.poll() is None and not _snapshot_changed(out, stamps):
            time.sleep(0.002)
        started = time.monotonic()
        if i == 0:
            proc.wait()
            windows.append(time.monotonic() - started)
            assert tree(out) == new_tree, "an uninterrupted run over the earlier output differs from a fresh one"
            continue
        delay = rng.uniform(0, windows[0] * 1.1)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        now = tree(out)
        kind = "previous" if now == prev_tree else ("new" if now == new_tree else "neither")
        outcomes[kind] += 1
        details.append((round(delay, 3), proc.returncode, kind))
        if log:
            log(f"kill {i:2d} at +{delay:.3f}s of the write phase: rc {proc.returncode}, output is {kind}")
    leftovers = sorted(p.name for p in out.parent.glob(f".{out.name}.*"))
    # the next aggregation over a killed one finishes and cleans up what the kill left beside the output
    rc = run(aggregate_argv(exp, out, figures=figures))[0]
    after = {"rc": rc, "whole": tree(out) == new_tree, "leftovers": sorted(p.name for p in out.parent.glob(f".{out.name}.*"))}
    return {"outcomes": outcomes, "write_phase_s": windows[0], "details": details, "leftovers_after_kills": leftovers, "rerun": after}


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


def kill_pids(pids: list[int]) -> None:
    """SIGKILL processes this campaign started (by PID)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def heads(tmpdir: Path) -> int:
    """How many Ray heads (``ray start --head``) run with this RAY_TMPDIR."""
    n = 0
    for pid in pids_with_tmpdir(tmpdir):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"start" in cmd and b"--head" in cmd and any(c.endswith(b"ray.scripts.scripts") or c.endswith(b"/ray") for c in cmd):
            n += 1
    return n


def local_cluster_cases(scratch_short: Path, with_cluster: bool = True) -> Iterator[Result]:
    """Bad state files, a state naming an unrelated live session, and a state corrupted while the cluster runs."""
    folder = scratch_short / "lc"
    folder.mkdir(parents=True, exist_ok=True)
    env = {"RANKCSE_LOCAL_CLUSTER_DIR": str(folder)}
    lc = [PY, "-m", "rayjobs.local_cluster"]
    state = folder / "state.json"
    for text in ("[]", "{}", '{"sid": "abc"}'):
        for command in ("status", "down", "up"):
            if command == "up" and not with_cluster:
                continue
            state.write_text(text)
            rc, last, out = run([*lc, command], timeout=180, env=env)
            trace = "traceback" if "Traceback" in out else "no traceback"
            if command == "up":
                up_ok = rc == 0 and "local cluster: up" in out
                stop = run([*lc, "down"], timeout=120, env=env)
                kill_pids(pids_with_tmpdir(folder / "ray"))
                verdict = f"{trace}; {'started' if up_ok else 'not started'} (down: {stop[1]})"
            else:
                verdict = trace
            yield Result(f"local_cluster {command} with state.json = {text}", rc, last, verdict)
    # a state naming an unrelated live session (a stale file and a reused PID)
    other = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        stale = {
            "sid": other.pid,
            "address": "127.0.0.1:1",
            "dashboard": "http://127.0.0.1:2",
            "auth_mode": "disabled",
            "ray_tmpdir": str(folder / "ray"),
            "config": str(folder / "cluster.yaml"),
            "log": str(folder / "ray_start.log"),
            "max_workers": 2,
            "worker": {"CPU": 2.0, "GPU": 1.0},
            "started": "2026-01-01 00:00:00",
        }
        for command in ("status", "down"):
            state.write_text(json.dumps(stale))
            rc, last, _ = run([*lc, command], timeout=60, env=env)
            alive = other.poll() is None
            yield Result(
                f"local_cluster {command}, state naming an unrelated live session",
                rc,
                last,
                "unrelated alive" if alive else "UNRELATED KILLED",
            )
    finally:
        if other.poll() is None:
            other.kill()
        other.wait()
    if not with_cluster:
        return
    state.unlink(missing_ok=True)
    tmpdir = folder / "ray"
    try:
        rc, last, _ = run([*lc, "up", "--max-workers", "1", "--cpus-per-worker", "1", "--gpus-per-worker", "0"], timeout=240, env=env)
        yield Result("local_cluster up (fresh)", rc, last, f"{heads(tmpdir)} head(s)")
        n_before = len(pids_with_tmpdir(tmpdir))
        state.write_text('{"sid": 12')
        rc, last, _ = run([*lc, "status"], timeout=60, env=env)
        yield Result("local_cluster status, state corrupted while it runs", rc, last)
        rc, last, _ = run([*lc, "up", "--max-workers", "1", "--cpus-per-worker", "1", "--gpus-per-worker", "0"], timeout=240, env=env)
        yield Result("local_cluster up, state corrupted while it runs", rc, last, f"{heads(tmpdir)} head(s) now")
        state.write_text('{"sid": 12')
        rc, last, _ = run([*lc, "down"], timeout=120, env=env)
        time.sleep(1)
        left = pids_with_tmpdir(tmpdir)
        yield Result(
            "local_cluster down, state corrupted while it runs",
            rc,
            last,
            f"{len(left)} of its processes left running (of {n_before})" if left else f"all {n_before}+ processes stopped",
        )
    finally:
        run([*lc, "down"], timeout=120, env=env)
        kill_pids(pids_with_tmpdir(tmpdir))


# -- sweep --------------------------------------------------------------------------------------------------


def sweep_cases(scratch: Path, with_ray: bool = True) -> Iterator[Result]:
    """Storage path that is a file, a negative resource wait, an unreachable MLflow server, W&B without a login."""
    base = scratch / "sweep"
    base.mkdir(parents=True, exist_ok=True)
    a_file = base / "a_file"
    a_file.write_text("x")
    sw = [PY, "rayjobs/sweep.py", "--preset", "smoke", "--max-steps", "2", "--num-seeds", "1", "--no-aggregate"]
    rc, last, _ = run([*sw, "--dry-run", "--storage-path", str(a_file)], timeout=120)
    yield Result("sweep --dry-run --storage-path FILE", rc, last)
    rc, last, _ = run([*sw, "--dry-run", "--storage-path", str(a_file / "sub")], timeout=120)
    yield Result("sweep --dry-run --storage-path FILE/sub", rc, last)
    rc, last, _ = run([*sw, "--dry-run", "--storage-path", str(base / "st"), "--resource-wait", "-5"], timeout=120)
    yield Result("sweep --dry-run --resource-wait -5", rc, last)
    if not with_ray:
        return
    t0 = time.monotonic()
    rc, last, _ = run([*sw, "--storage-path", str(a_file), "--address", "local"], timeout=240, env={"RAY_TMPDIR": str(base / "ray")})
    yield Result("sweep --storage-path FILE (real run)", rc, last, f"{time.monotonic() - t0:.0f}s")
    t0 = time.monotonic()
    rc, last, _ = run(
        [*sw, "--storage-path", str(base / "st2"), "--address", "local", "--mlflow", "http://127.0.0.1:9"],
        timeout=90,
        env={"RAY_TMPDIR": str(base / "ray")},
    )
    yield Result(
        "sweep --mlflow http://127.0.0.1:9 (unreachable)",
        rc,
        last,
        f"{time.monotonic() - t0:.0f}s; trials started: {_trials(base / 'st2')}",
    )
    t0 = time.monotonic()
    rc, last, _ = run(
        [*sw, "--storage-path", str(base / "st3"), "--address", "local", "--wandb", "rankcse-campaign"],
        timeout=90,
        env={"RAY_TMPDIR": str(base / "ray"), "WANDB_MODE": None, "WANDB_API_KEY": None, "NETRC": str(base / "none")},
    )
    yield Result(
        "sweep --wandb P without a login (WANDB_MODE unset)",
        rc,
        last,
        f"{time.monotonic() - t0:.0f}s; trials started: {_trials(base / 'st3')}",
    )


def _trials(storage: Path) -> int:
    return sum(1 for _ in storage.glob("*/*/params.json")) if storage.is_dir() else 0
