"""Structure of the core pinned by tests: torch-free config, the transformers scheduler, flags from TrainConfig, one door.

Each test can fail: a torch import slipped into the config's imports, a schedule that drifts from the old formula, a
flag lost or renamed, or an import of transformers' internals outside rankcse/hf_compat.py.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from support import ROOT
from transformers import get_linear_schedule_with_warmup

from rankcse import hf_compat, names
from rankcse.cli import build_parser, config_from_args, main
from rankcse.config import TrainConfig, train_flags
from rankcse.names import POOLERS, RR_TARGETS
from rankcse.rank import RR_ENTROPIES

BLOCK_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers", "ray"):
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Block())
import rankcse.config, rankcse.names, rankcse.rr_schedule
from rankcse.config import TrainConfig
TrainConfig(rr_schedule="warmup:5")
print("imported")
"""


def test_config_and_names_import_without_torch() -> None:
    """rankcse.config (what the analysis side reads) and rankcse.names load with torch, transformers and Ray unimportable."""
    done = subprocess.run([sys.executable, "-c", BLOCK_TORCH], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0 and "imported" in done.stdout, done.stderr[-2000:]


def _old_linear_schedule(step: int, warmup: int, total: int) -> float:
    """The factor of the hand-written schedule train.py had before it used transformers' (warm-up, then linear decay)."""
    if warmup and step < warmup:
        return step / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


@pytest.mark.parametrize(("warmup", "total"), [(0, 10), (3, 10), (10, 10), (4, 7)])
def test_transformers_schedule_equals_the_old_one_at_every_step(warmup: int, total: int) -> None:
    params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.AdamW(params, lr=3e-5)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total)
    seen = []
    for _ in range(total + 2):  # past the end too: the rate stays at 0
        seen.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert seen == [3e-5 * _old_linear_schedule(step, warmup, total) for step in range(total + 2)]


def test_rr_kinds_name_the_entropies() -> None:
    assert tuple(RR_ENTROPIES) == names.RR_KINDS


#: The flags of `rankcse train` that set a TrainConfig field, as the hand-kept table (and the probing flags) had them.
OLD_FLAGS = {
    "--method": str, "--model": str, "--pooler": str, "--max-steps": int, "--epochs": int, "--eval-every": int, "--seed": int,
    "--rr-coef": float, "--rr-kind": str, "--rr-on": str, "--rr-schedule": str, "--batch-size": int, "--learning-rate": float,
    "--max-len": int, "--temperature": float, "--train-file": str, "--train-dataset": str, "--max-train-sentences": int,
    "--data-dir": str, "--probe-size": int, "--eval-batch-size": int, "--device": str, "--precision": str, "--num-threads": int,
    "--log-every": int, "--probing-every-evals": int, "--probing-data-dir": str,
    "--final-tasks": list, "--probing-tasks": list, "--transfer-tasks": list,
}  # fmt: skip


def test_train_flags_come_from_the_config_fields() -> None:
    flags = {f.name: (list if f.is_list else f.type) for f in train_flags()}
    assert flags == OLD_FLAGS
    argv = ["train", "--method", "mixcse", "--max-steps", "7", "--rr-coef", "0.25", "--learning-rate", "1e-4", "--train-file", "x.txt"]
    argv += ["--final-tasks", "sts13", "stsb", "--probing-tasks", "none", "--probing-every-evals", "2", "--device", "cpu"]
    cfg = config_from_args(build_parser().parse_args(argv))
    expected = TrainConfig(method="mixcse", max_steps=7, rr_coef=0.25, learning_rate=1e-4, train_file="x.txt", device="cpu")
    expected.final_tasks, expected.probing_tasks, expected.probing_every_evals = ["sts13", "stsb"], [], 2
    assert cfg == expected
    with pytest.raises(SystemExit):  # argparse still converts: a whole number is needed
        build_parser().parse_args(["train", "--max-steps", "seven"])


def test_a_flags_allowed_values_come_from_rankcse_names(capsys) -> None:
    """--help lists the values rankcse.names allows; a value outside them is TrainConfig's one-line error, not argparse's."""
    shown = {f.dest: f.metavar for f in train_flags()}
    assert shown["pooler"] == "{" + ",".join(POOLERS) + "}" and shown["rr_on"] == "{" + ",".join(RR_TARGETS) + "}"
    assert main(["train", "--pooler", "max", "--max-steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown pooler 'max'" in err[0] and "cls_before_pooler" in err[0]


def test_untested_transformers_gets_one_warning_line() -> None:
    tested = hf_compat.TESTED_TRANSFORMERS[0]
    assert hf_compat.untested_version(f"{tested}.3") is None
    message = hf_compat.untested_version("4.46.0")
    assert message and "\n" not in message and "4.46.0" in message and tested in message


LEAK = "from transformers.masking_utils import create_bidirectional_mask\n\nprint(create_bidirectional_mask)\n"


def _ruff(filename: str) -> subprocess.CompletedProcess:
    """``ruff check`` (the [dev] extra, as CI installs it) of :data:`LEAK` as if it were ``filename``, under the project's config."""
    cmd = [sys.executable, "-m", "ruff", "check", "--stdin-filename", filename, "-"]
    return subprocess.run(cmd, input=LEAK, capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_banned_api_rejects_transformers_internals_outside_the_door() -> None:
    """TID251 on the import in any module but rankcse/hf_compat.py."""
    leak = _ruff("rankcse/methods/leak.py")
    assert leak.returncode == 1 and "TID251 `transformers.masking_utils` is banned" in leak.stdout, leak.stdout + leak.stderr
    door = _ruff("rankcse/hf_compat.py")
    assert door.returncode == 0, door.stdout + door.stderr
