"""Watch a running sweep through the Ray dashboard: its job and trial actors from the dashboard's HTTP API, and the jobs
page as a real browser renders it (headless Chromium: a screenshot, and the rendered page's text to check it shows the job).

Used by rayjobs.ssh_rehearsal while ``ray submit`` runs the sweep on the rehearsal's head node, through ``ray dashboard``'s
port forward.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

#: Chromium without sandbox (root in a container), GPU, QUIC or any call home; a fresh profile per run.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=1400,900",
    "--virtual-time-budget=15000",
)


#: The actor class of a Tune trial of a function trainable (rayjobs.tuning.trainable.train_trial) in the dashboard's actor list.
TRIAL_ACTOR_CLASS = "ImplicitFunc"


class DashboardCheckFailed(Exception):
    """The dashboard did not answer, or did not show the sweep's job and trials in time."""


def get_json(url: str, timeout: float = 10.0) -> Any:
    """GET ``url`` and parse its JSON body."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read().decode())


def sweep_job(base: str) -> dict[str, Any] | None:
    """The running driver job of a rayjobs/sweep.py run, from the dashboard's /api/jobs/ (None until it runs)."""
    for job in get_json(f"{base}/api/jobs/"):
        if "sweep.py" in (job.get("entrypoint") or "") and job.get("status") == "RUNNING":
            return job
    return None


def job_actors(base: str, job_id: str) -> list[dict[str, Any]]:
    """The job's actors from the dashboard's state API: id, class name, state, node."""
    body = get_json(f"{base}/api/v0/actors?limit=1000&detail=1")
    actors = body["data"]["result"]["result"]
    return [
        {k: a.get(k) for k in ("actor_id", "class_name", "state", "node_id", "pid", "name")} for a in actors if a.get("job_id") == job_id
    ]


def alive_nodes(base: str) -> int:
    """Nodes the dashboard lists as alive."""
    body = get_json(f"{base}/nodes?view=summary")
    return sum(1 for node in body["data"]["summary"] if node.get("raylet", {}).get("state") == "ALIVE")


def chromium(url: str, *extra: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Headless Chromium on ``url`` with a fresh profile (``extra``: --screenshot=PATH or --dump-dom)."""
    with tempfile.TemporaryDirectory(prefix="rankcse-chromium-") as profile:
        cmd = ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def page_text(dom: str) -> str:
    """The visible text of a rendered page (tags, scripts and styles dropped)."""
    dom = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", dom)
    return " ".join(re.sub(r"<[^>]+>", " ", dom).split())


def watch_sweep(
    base: str, workdir: Path, screenshot: Path | None, n_trials: int, deadline: float, alive: subprocess.Popen
) -> dict[str, Any]:
    """Wait until the dashboard lists the sweep's job with its trial actors alive, then render its jobs page; what it showed."""
    seen: dict[str, Any] = {}
    job = None
    trials: list[dict[str, Any]] = []
    while True:
        if alive.poll() is not None:
            raise DashboardCheckFailed(f"the sweep ended (rc={alive.returncode}) before the dashboard showed its trials; seen: {seen}")
        if time.monotonic() > deadline:
            raise DashboardCheckFailed(f"no running sweep job with {n_trials} alive trial actors in the dashboard in time; seen: {seen}")
        try:
            job = sweep_job(base)
            if job is not None:
                actors = job_actors(base, job["job_id"])
                trials = [a for a in actors if a["state"] == "ALIVE" and a["class_name"] == TRIAL_ACTOR_CLASS]
                seen = {"job_id": job["job_id"], "actors": actors}
                if len(trials) >= n_trials:
                    break
        except (OSError, ValueError, KeyError) as exc:
            seen["error"] = f"{type(exc).__name__}: {exc}"
        time.sleep(1.0)
    seen.update(
        job_id=job["job_id"], job_status=job["status"], entrypoint=job.get("entrypoint"), trial_actors=trials, nodes=alive_nodes(base)
    )
    shot = screenshot or workdir / "dashboard-jobs.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    taken = chromium(f"{base}/#/jobs", f"--screenshot={shot}")
    if taken.returncode != 0 or not shot.is_file() or shot.stat().st_size < 10_000:
        raise DashboardCheckFailed(f"chromium made no screenshot of {base}/#/jobs (rc={taken.returncode}): {taken.stderr[-500:]}")
    dom = chromium(f"{base}/#/jobs", "--dump-dom")
    text = page_text(dom.stdout)
    (workdir / "dashboard-jobs.txt").write_text(text)
    seen.update(screenshot=str(shot), page_text=text[:2000], page_shows_job=job["job_id"] in text and "sweep.py" in text)
    if not seen["page_shows_job"]:
        raise DashboardCheckFailed(f"the rendered jobs page does not show job {job['job_id']} (sweep.py): {text[:300]!r}")
    return seen
