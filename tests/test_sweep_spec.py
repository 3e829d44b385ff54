"""Sweep presets, command-line overrides and the errors a bad sweep gets before Ray starts (no Ray here)."""

from __future__ import annotations

import math

import pytest
import yaml

from rankcse.errors import ConfigError
from rayjobs.layout import cell_label
from rayjobs.tuning import driver as sweep
from rayjobs.tuning.spec import PRESET_DIR, Fault, SweepSpec, preset_names

#: The presets the README describes, with the trial counts that stay put (every preset is checked against its own grid).
SHIPPED, TRIALS = ("smoke", "demo", "study", "paper"), {"smoke": 8, "paper": 150}


def spec_of(*argv: str) -> SweepSpec:
    return sweep.spec_from_args(sweep.build_parser().parse_args(list(argv)))


def test_presets_ship_and_validate():
    assert {"smoke", "demo", "paper"} <= set(preset_names())
    smoke = SweepSpec.load("smoke")
    configs = smoke.validate()
    assert len(configs) == len(smoke.cells()) == 8  # 2 methods x 2 RR x 2 seeds
    assert {c.method for c in configs} == {"simcse", "mixcse"} and {c.rr_coef for c in configs} == {0.0, 0.1}
    assert all(c.device == "cpu" and c.num_threads == 1 and c.max_steps == 30 for c in configs)
    assert len(SweepSpec.load("demo").validate()) == 6
    long = SweepSpec.load("study-long").validate()  # sized so every claim can get a verdict: 5 distinct conditions x 8 seeds
    assert len(long) == 40 and {c.max_steps for c in long} == {500} and len({(c.rr_coef, c.rr_schedule) for c in long if c.rr_coef}) == 4


def _expected_trials(grid: dict) -> int:
    """The cross product of the YAML's axes, where a cell with RR off runs once whatever the schedule (counted here)."""
    others = math.prod(len(v) for k, v in grid.items() if k not in ("rr_coef", "rr_schedule"))
    off = sum(float(c) == 0 for c in grid["rr_coef"])
    return others * (off + (len(grid["rr_coef"]) - off) * len(grid["rr_schedule"]))


@pytest.mark.parametrize("name", preset_names())
def test_every_shipped_preset_parses_expands_and_resolves_each_cell(name, tmp_path, capsys):
    assert set(SHIPPED) <= set(preset_names())
    grid = yaml.safe_load((PRESET_DIR / f"{name}.yaml").read_text())["grid"]
    spec = SweepSpec.load(name)
    cells = spec.cells()
    assert len(cells) == _expected_trials(grid) == TRIALS.get(name, len(cells))
    assert len({cell_label(c) for c in cells}) == len(cells)  # one trial folder each
    configs = spec.validate(check_files=False)  # every cell's config, resolved (the paper's corpus need not be here)
    assert len(configs) == len(cells)
    for cell, cfg in zip(cells, configs):
        assert {k: getattr(cfg, k) for k in cell} == cell
        assert cfg.device == ("cuda" if spec.gpus_per_trial > 0 else "cpu") and cfg.num_threads == max(1, int(spec.cpus_per_trial))
    assert sweep.main(["--preset", name, "--dry-run", "--storage-path", str(tmp_path)]) == 0
    assert f"{len(cells)} trials" in capsys.readouterr().out and not any(tmp_path.iterdir())


def test_the_demo_trials_are_study_cells_with_the_same_settings():
    study = SweepSpec.load("study")
    by_label = {cell_label(c): cfg for c, cfg in zip(study.cells(), study.validate())}
    demo = SweepSpec.load("demo")
    for cell, cfg in zip(demo.cells(), demo.validate()):
        assert cfg == by_label[cell_label(cell)], cell_label(cell)


def test_paper_preset_is_the_papers_grid_and_needs_its_corpus():
    paper = SweepSpec.load("paper")
    assert len(paper.cells()) == 5 * 6 * 5
    assert paper.gpus_per_trial == 1 and paper.train["model"] == "bert-base-uncased" and paper.train["eval_every"] == 125
    assert paper.runtime_settings()["device"] == "cuda"
    cfg = paper.trial_config({"method": "promptbert", "rr_coef": 0.1, "rr_schedule": "always", "seed": 0}).resolved()
    assert (cfg.batch_size, cfg.learning_rate) == (256, 1e-5)  # PromptBERT's official recipe
    with pytest.raises(ConfigError, match="wiki1m_for_simcse.txt does not exist"):
        paper.validate()


def test_overrides_replace_axes_and_settings():
    spec = spec_of(
        "--methods",
        "simcse",
        "--rr-coefs",
        "0",
        "0.05",
        "0.2",
        "--num-seeds",
        "3",
        "--grid",
        "learning_rate=[1e-5,3e-5]",
        "--max-steps",
        "7",
        "--set",
        "probe_size=100",
        "--gpus-per-trial",
        "0.25",
        "--name",
        "mine",
    )
    cells = spec.cells()
    assert len(cells) == 1 * 3 * 1 * 3 * 2
    assert {c["learning_rate"] for c in cells} == {1e-5, 3e-5} and {c["seed"] for c in cells} == {0, 1, 2}
    assert spec.train["max_steps"] == 7 and spec.train["probe_size"] == 100 and spec.name == "mine"
    assert spec.gpus_per_trial == 0.25 and spec.runtime_settings()["device"] == "cuda"
    cfg = spec.trial_config(cells[0])
    assert cfg.learning_rate == cells[0]["learning_rate"] and cfg.max_steps == 7
    assert cell_label(cells[0]) == "simcse_rr0_always_seed0_learning_rate=1e-05"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--methods", "simcse", "simsce"], "grid cell simsce_rr0_always_seed0: unknown method 'simsce' (did you mean 'simcse'?)"),
        (["--rr-coefs", "0", "-0.1"], "rr_coef must be >= 0"),
        (["--gpus-per-trial", "1.5"], "gpus_per_trial must be a fraction in (0, 1] or a whole number"),
        (["--set", "device=cuda"], "follows from the trial's resources"),
        (["--seeds", "0", "0"], "repeats a value"),
        (["--inject-fault", "method=infocse:3"], "matches no grid cell"),
        (["--inject-fault", "oops"], "use KEY=VALUE"),
        (["--set", "learning_rat=1e-5"], "unknown setting 'learning_rat'; did you mean 'learning_rate'?"),
        (["--storage-path", "s3://bucket/x"], "must be a filesystem path"),
        (["--resume", "--seeds", "3"], "--resume continues the sweep as it was started"),
    ],
)
def test_bad_sweeps_fail_before_ray_starts(argv, message, capsys, tmp_path):
    argv = argv + (["--storage-path", str(tmp_path)] if "--storage-path" not in argv else [])
    assert sweep.main(argv + ["--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sweep: error: ") and message in err and "\n" not in err


def test_existing_experiment_needs_resume_or_overwrite(tmp_path, capsys):
    (tmp_path / "smoke").mkdir()
    assert sweep.main(["--storage-path", str(tmp_path)]) == 2
    assert "exists; pass --resume" in capsys.readouterr().err
    assert sweep.main(["--storage-path", str(tmp_path), "--resume"]) == 2
    assert "is not a rankcse sweep" in capsys.readouterr().err


def test_dry_run_lists_every_trial(tmp_path, capsys):
    assert sweep.main(["--storage-path", str(tmp_path), "--dry-run", "--methods", "simcse", "promptbert"]) == 0
    out = capsys.readouterr().out
    assert "8 trials" in out and out.count("promptbert_rr") == 4
    assert "promptbert_rr0.1_always_seed1: default, batch 32" in out  # the preset's batch size overrides the recipe


def test_fault_matching():
    fault = Fault.parse("method=mixcse,rr_coef=0.1:4:1")
    assert (fault.at_step, fault.times) == (4, 1)
    assert fault.matches({"method": "mixcse", "rr_coef": 0.1, "seed": 3})
    assert not fault.matches({"method": "mixcse", "rr_coef": 0.0, "seed": 3})
