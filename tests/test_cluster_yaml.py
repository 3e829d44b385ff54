"""The shipped cluster.yaml and its offline validator (rayjobs.cluster_config): fast, no cloud, no Ray cluster."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml

from rayjobs.cluster.cluster_config import (
    ClusterConfigError,
    gpu_node_types,
    load_cluster_config,
    main,
    ray_version_pins,
    validate_cluster_config,
)

CLUSTER_YAML = Path(__file__).resolve().parent.parent / "cluster.yaml"
HEAD = "ray.head.default"
WORKER = "ray.worker.gpu"
WORKER_PATH = f"available_node_types.{WORKER}"


@pytest.fixture()
def config() -> dict[str, Any]:
    """A fresh copy of the shipped cluster.yaml, to break."""
    return copy.deepcopy(yaml.safe_load(CLUSTER_YAML.read_text(encoding="utf-8")))


def _problems(config: dict[str, Any], **kwargs: Any) -> ClusterConfigError:
    with pytest.raises(ClusterConfigError) as info:
        validate_cluster_config(config, **kwargs)
    return info.value


def _paths(error: ClusterConfigError) -> list[str]:
    return [p.path for p in error.problems]


def _ray_pin_index(config: dict[str, Any]) -> int:
    [index] = [i for i, cmd in enumerate(config["setup_commands"]) if "ray[" in cmd]
    return index


# --- the shipped config -----------------------------------------------------------------------


def test_shipped_cluster_yaml_is_valid() -> None:
    prepared = validate_cluster_config(CLUSTER_YAML)
    assert prepared["provider"]["type"] == "aws" and prepared["provider"]["region"] == "us-west-2"
    nodes = prepared["available_node_types"]
    assert prepared["head_node_type"] == HEAD and set(nodes) == {HEAD, WORKER}
    assert nodes[HEAD]["resources"] == {"CPU": 0, "GPU": 0}  # the head runs the driver, never a trial
    assert nodes[WORKER]["resources"] == {"CPU": 4, "GPU": 1} and nodes[WORKER]["min_workers"] == 0
    assert nodes[WORKER]["node_config"]["InstanceType"] == "g5.xlarge"
    assert gpu_node_types(prepared) == {WORKER: 1}
    # Ray's prepare_config merged setup_commands into both roles' lists
    assert prepared["setup_commands"][0] in prepared["head_setup_commands"]
    assert prepared["setup_commands"][0] in prepared["worker_setup_commands"]


def test_shipped_cluster_yaml_pins_the_installed_ray(config: dict[str, Any]) -> None:
    pins = ray_version_pins(config)
    assert pins and {version for _, version in pins} == {ray.__version__}


def test_shipped_cluster_yaml_sets_up_the_project(config: dict[str, Any]) -> None:
    assert config["file_mounts"] == {"~/rankcse": "."}
    setup = "\n".join(config["setup_commands"])
    assert 'pip install -q "torch' in setup and "pip install -q -e ~/rankcse" in setup
    assert "test -s ~/data/wiki1m_for_simcse.txt" in setup
    assert "princeton-nlp/datasets-for-simcse/resolve/main/wiki1m_for_simcse.txt" in setup
    assert "/mnt/shared" in CLUSTER_YAML.read_text(encoding="utf-8")  # the (commented) shared-storage mount


def test_cli_reports_a_valid_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(CLUSTER_YAML)]) == 0
    out = capsys.readouterr().out
    assert f"valid (ray {ray.__version__}, 2 node types, GPU workers: {WORKER} (g5.xlarge, 1 GPU" in out


# --- Ray's own schema -------------------------------------------------------------------------


def test_unknown_top_level_key_fails_rays_schema(config: dict[str, Any]) -> None:
    config["idle_timeout_minute"] = 5
    error = _problems(config)
    assert _paths(error) == ["idle_timeout_minute"]
    assert "Ray's cluster schema" in str(error) and "idle_timeout_minutes" in str(error)  # the suggestion
    assert isinstance(error.__cause__, jsonschema.ValidationError)  # Ray's validate_config raised it


def test_non_integer_max_workers_fails_rays_schema(config: dict[str, Any]) -> None:
    config["available_node_types"][WORKER]["max_workers"] = "many"
    error = _problems(config)
    assert _paths(error) == [f"{WORKER_PATH}.max_workers"]
    assert "'many' is not of type 'integer'" in str(error)
    assert isinstance(error.__cause__, jsonschema.ValidationError)


def test_rays_cross_field_checks_are_reported(config: dict[str, Any]) -> None:
    config["head_node_type"] = "ray.head.gpu"
    error = _problems(config)
    assert _paths(error) == ["head_node_type"] and "must be one of `available_node_types`" in str(error)


# --- our own checks ---------------------------------------------------------------------------


def test_ray_pinned_to_another_version(config: dict[str, Any]) -> None:
    index = _ray_pin_index(config)
    config["setup_commands"][index] = config["setup_commands"][index].replace(f"=={ray.__version__}", "==2.9.3")
    error = _problems(config)
    assert _paths(error) == [f"setup_commands[{index}]"]
    assert "pins ray 2.9.3" in str(error) and f"driver runs ray {ray.__version__}" in str(error)


def test_driver_version_other_than_the_pin(config: dict[str, Any]) -> None:
    error = _problems(config, driver_ray_version="2.61.0")
    assert _paths(error) == [f"setup_commands[{_ray_pin_index(config)}]"] and "driver runs ray 2.61.0" in str(error)
    validate_cluster_config(config, driver_ray_version=ray.__version__)


def test_ray_not_pinned_at_all(config: dict[str, Any]) -> None:
    config["setup_commands"][_ray_pin_index(config)] = "pip install -q -e ~/rankcse 'ray[default,tune]>=2.40'"
    error = _problems(config)
    assert "setup_commands" in _paths(error)
    assert "not an exact pin" in str(error) and "no command pins the Ray version" in str(error)


def test_ray_pin_in_a_node_types_own_setup_commands(config: dict[str, Any]) -> None:
    # a node type's worker_setup_commands replace the global lists on its nodes, so they need the pin too
    config["available_node_types"][WORKER]["worker_setup_commands"] = ["pip install -q -e ~/rankcse"]
    error = _problems(config)
    assert _paths(error) == [f"{WORKER_PATH}.worker_setup_commands"]
    config["available_node_types"][WORKER]["worker_setup_commands"] = [f"pip install ray[tune]=={ray.__version__}"]
    validate_cluster_config(config)


def test_unknown_provider_type(config: dict[str, Any]) -> None:
    config["provider"]["type"] = "aws2"
    error = _problems(config)
    assert _paths(error) == ["provider.type"] and "aws2" in str(error)  # Ray's message: Unsupported node provider


def test_provider_without_type_still_gets_rays_schema(config: dict[str, Any]) -> None:
    del config["provider"]["type"]
    config["surprise"] = True
    assert sorted(_paths(_problems(config))) == ["provider.type", "surprise"]


def test_aws_provider_without_region(config: dict[str, Any]) -> None:
    del config["provider"]["region"]
    error = _problems(config)
    assert _paths(error) == ["provider.region"] and "required for provider type 'aws'" in str(error)


def test_no_gpu_node_type(config: dict[str, Any]) -> None:
    del config["available_node_types"][WORKER]
    error = _problems(config)
    assert _paths(error) == ["available_node_types"] and "no node type declares GPUs" in str(error)
    assert gpu_node_types(validate_cluster_config(config, require_gpu=False)) == {}


def test_gpu_workers_that_can_never_start(config: dict[str, Any]) -> None:
    config["available_node_types"][WORKER]["max_workers"] = 0
    error = _problems(config)
    assert _paths(error) == ["max_workers"] and "can never start" in str(error)


@pytest.mark.parametrize("resources", [{"CPU": 4, "GPU": 0}, {"CPU": 4}])
def test_gpu_node_type_must_declare_its_gpus(config: dict[str, Any], resources: dict[str, int]) -> None:
    config["available_node_types"][WORKER]["resources"] = resources
    error = _problems(config)
    assert _paths(error) == [f"{WORKER_PATH}.resources.GPU"] and "declares no GPUs" in str(error)
    validate_cluster_config(config, require_gpu=False)


def test_gpu_declared_on_a_node_type_with_another_name(config: dict[str, Any]) -> None:
    nodes = config["available_node_types"]
    nodes["ray.worker.a10g"] = nodes.pop(WORKER)
    assert gpu_node_types(validate_cluster_config(config)) == {"ray.worker.a10g": 1}


def test_every_problem_is_listed_one_a_line(config: dict[str, Any]) -> None:
    config["surprise"] = True
    del config["provider"]["region"]
    config["available_node_types"][WORKER]["resources"]["GPU"] = 0
    error = _problems(config)
    assert sorted(_paths(error)) == sorted(["surprise", "provider.region", f"{WORKER_PATH}.resources.GPU"])
    lines = str(error).splitlines()
    assert lines[0] == "cluster config: 3 problems:" and len(lines) == 4
    assert all(line.startswith("  ") and ": " in line for line in lines[1:])


# --- loading and the command line -------------------------------------------------------------


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ClusterConfigError, match="does not exist"):
        load_cluster_config(tmp_path / "missing.yaml")
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ClusterConfigError, match="must be a YAML mapping"):
        validate_cluster_config(listed)
    broken = tmp_path / "broken.yaml"
    broken.write_text("provider: {type: aws\n", encoding="utf-8")
    with pytest.raises(ClusterConfigError, match="not valid YAML"):
        load_cluster_config(broken)


def test_cli_lists_the_problems_with_exit_status_2(config: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config["available_node_types"][WORKER]["resources"]["GPU"] = 0
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{path}: 1 problem:") and f"{WORKER_PATH}.resources.GPU" in err
