"""Offline validation of a Ray cluster launcher config (``cluster.yaml``) for rankcse sweeps.

``ray up`` finds most mistakes only after it has contacted the cloud, or after the head node is up
and the first GPU worker fails to start. This module finds them in a second, with no network and no
cloud credentials:

1. Ray's own checks: the same ``prepare_config`` + ``validate_config`` that ``ray up`` runs first
   (defaults merged from ``ray/autoscaler/<provider>/defaults.yaml``, then the JSON schema
   ``ray/autoscaler/ray-schema.json``).
2. What Ray's schema does not look at (it treats ``provider`` and every ``node_config`` as open
   mappings): the provider's required keys, each node type's instance-type key, whether the GPUs a
   node type declares exist on its instance type, whether the cluster installs exactly the driver's
   Ray version, and whether any node type has GPUs at all.

    python -m rayjobs.cluster_config cluster.yaml       # exit 0: valid; 2: the problems, one a line
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import difflib
import io
import json
import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

#: Provider types Ray 2.60's cluster launcher knows (``ray.autoscaler._private.providers._NODE_PROVIDERS``).
KNOWN_PROVIDERS = (
    "aws", "gcp", "azure", "local", "kuberay", "vsphere", "aliyun", "readonly", "external", "spark",
    "fake_multinode", "fake_multinode_docker",
)
#: Keys a provider block must have (``local`` is special-cased: head_ip + worker_ips, or coordinator_address).
REQUIRED_PROVIDER_KEYS: dict[str, tuple[str, ...]] = {
    "aws": ("region",),
    "gcp": ("region", "project_id", "availability_zone"),
    "azure": ("location", "resource_group"),
    "external": ("module",),
}
#: Where each cloud provider's node_config names the instance type (a key path inside node_config).
INSTANCE_TYPE_KEYS: dict[str, tuple[str, ...]] = {
    "aws": ("InstanceType",),
    "gcp": ("machineType",),
    "azure": ("azure_arm_parameters", "vmSize"),
}

_ONE_GPU_SIZES = ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge")
#: NVIDIA GPUs per AWS instance type (the common training types; extend as needed).
AWS_GPU_INSTANCES: dict[str, int] = {
    **{f"g4dn.{size}": 1 for size in _ONE_GPU_SIZES},
    "g4dn.12xlarge": 4,
    "g4dn.metal": 8,
    **{f"{family}.{size}": 1 for family in ("g5", "g6", "g6e") for size in _ONE_GPU_SIZES},
    **{f"{family}.{size}": 4 for family in ("g5", "g6", "g6e") for size in ("12xlarge", "24xlarge")},
    **{f"{family}.48xlarge": 8 for family in ("g5", "g6", "g6e")},
    "p3.2xlarge": 1,
    "p3.8xlarge": 4,
    "p3.16xlarge": 8,
    "p3dn.24xlarge": 8,
    "p4d.24xlarge": 8,
    "p4de.24xlarge": 8,
    "p5.48xlarge": 8,
    "p5e.48xlarge": 8,
}
#: AWS families without GPUs: general purpose, compute, memory, burstable, storage (m5, c6i, r7g, t3a, i4i, ...).
_AWS_CPU_ONLY = re.compile(r"^(m|c|r|t|x|z|i|d|h|a|u)\d[a-z0-9-]*\.")
#: NVIDIA GPUs per Azure VM size (lower case; the NC/ND/NV sizes with whole GPUs).
AZURE_GPU_SIZES: dict[str, int] = {
    "standard_nc6s_v3": 1, "standard_nc12s_v3": 2, "standard_nc24s_v3": 4, "standard_nc24rs_v3": 4,
    "standard_nc4as_t4_v3": 1, "standard_nc8as_t4_v3": 1, "standard_nc16as_t4_v3": 1, "standard_nc64as_t4_v3": 4,
    "standard_nc24ads_a100_v4": 1, "standard_nc48ads_a100_v4": 2, "standard_nc96ads_a100_v4": 4,
    "standard_nc40ads_h100_v5": 1, "standard_nc80adis_h100_v5": 2,
    "standard_nd40rs_v2": 8, "standard_nd96asr_v4": 8, "standard_nd96amsr_a100_v4": 8, "standard_nd96isr_h100_v5": 8,
    "standard_nv12s_v3": 1, "standard_nv24s_v3": 2, "standard_nv48s_v3": 4,
    "standard_nv36ads_a10_v5": 1, "standard_nv72ads_a10_v5": 2,
}
#: Azure series without GPUs (A, B, D, E, F, L, M; N* are the GPU series).
_AZURE_CPU_ONLY = re.compile(r"^standard_[abdeflm]", re.IGNORECASE)
#: GCP machine types that come with GPUs attached (no guestAccelerators needed): a2/a3 name the count, g2 by size.
_GCP_BUILTIN_GPUS = re.compile(r"^a[23]-[a-z]+-(\d+)g$")
GCP_G2_GPUS: dict[str, int] = {
    "g2-standard-4": 1, "g2-standard-8": 1, "g2-standard-12": 1, "g2-standard-16": 1, "g2-standard-32": 1,
    "g2-standard-24": 2, "g2-standard-48": 4, "g2-standard-96": 8,
}

#: The global command lists that may install Ray (plus each node type's own worker_setup_commands).
_COMMAND_LISTS = ("setup_commands", "head_setup_commands", "worker_setup_commands")
# ray==X, ray[default,tune]==X (quoted or not), but not xgboost-ray==X or a path ending in /ray.
_RAY_PIN = re.compile(r"(?<![\w./@-])ray(?:\[[^\]]*\])?\s*==\s*([0-9][0-9A-Za-z.+!*-]*)")
_RAY_LOOSE = re.compile(r"(?<![\w./@-])ray(?:\[[^\]]*\])?(?:>=|<=|~=|!=|>(?!=)|<(?!=))[0-9A-Za-z.*,<>=!~]*")
# A Ray wheel file: ray-2.60.0-cp311-cp311-manylinux2014_x86_64.whl
_RAY_WHEEL = re.compile(r"(?<![\w.-])ray-(\d[0-9A-Za-z.+!]*)-cp\d")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a cluster config: the key path it is at and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ClusterConfigError(ValueError):
    """A cluster config that ``ray up`` would reject or that could not run a rankcse sweep.

    ``problems`` holds every problem found; the message lists them one a line, each starting with the
    key path it concerns (``available_node_types.ray.worker.gpu.node_config.InstanceType: ...``).
    """

    def __init__(self, problems: Sequence[Problem], source: str = "cluster config") -> None:
        self.problems = list(problems)
        self.source = source
        count = len(self.problems)
        lines = [f"{source}: {count} problem{'s' if count != 1 else ''}:"] + [f"  {p}" for p in self.problems]
        super().__init__("\n".join(lines))


def load_cluster_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a cluster config YAML file into a dict (``yaml.safe_load``).

    Raises :class:`ClusterConfigError` when the file is missing, is not YAML, or is not a mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise ClusterConfigError([Problem("<file>", f"{p} does not exist (or is not a file)")], str(p))
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ClusterConfigError([Problem("<file>", f"not valid YAML: {exc}")], str(p)) from exc
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise ClusterConfigError([Problem("<file>", f"must be a YAML mapping of cluster settings, but it is {kind}")], str(p))
    return data


def validate_cluster_config(
    path_or_dict: str | os.PathLike[str] | Mapping[str, Any],
    driver_ray_version: str | None = None,
    require_gpu: bool = True,
) -> dict[str, Any]:
    """Check a cluster config offline, with Ray's validator and then rankcse's own checks.

    ``driver_ray_version`` is the Ray the sweep's driver runs (default: the installed ``ray.__version__``);
    the config must pin exactly that version. ``require_gpu=False`` accepts a cluster without GPUs.
    Returns the config as Ray prepares it (defaults filled in, setup commands merged); raises
    :class:`ClusterConfigError` listing every problem found.
    """
    if isinstance(path_or_dict, Mapping):
        source = "cluster config"
        raw = copy.deepcopy(dict(path_or_dict))
    else:
        source = str(path_or_dict)
        raw = load_cluster_config(path_or_dict)
    if driver_ray_version is None:
        import ray

        driver_ray_version = ray.__version__

    problems = _provider_problems(raw)
    provider_type = _provider_type(raw)
    prepared: dict[str, Any] | None = None
    schema_error: Exception | None = None
    if provider_type is not None and not (provider_type == "local" and problems):  # Ray's prepare_config needs a usable provider
        prepared, ray_problems, schema_error = _ray_checks(raw)
        problems += ray_problems
    else:  # still report what Ray's schema says about the rest
        problems += _schema_problems(raw, ignore_required_top_level=True)

    node_types = _node_types(raw, prepared)
    if provider_type in INSTANCE_TYPE_KEYS:
        problems += _instance_type_problems(provider_type, node_types)
    problems += _ray_pin_problems(raw, driver_ray_version)
    if require_gpu and provider_type not in (None, "local", "kuberay"):  # local/kuberay: resources known only at run time
        problems += _gpu_presence_problems(raw, prepared, node_types)

    if problems:
        raise ClusterConfigError(problems, source) from schema_error
    if prepared is None:  # unreachable: every path that leaves it None records a problem
        raise ClusterConfigError([Problem("<config>", "Ray's prepare_config did not run")], source)
    return prepared


def gpu_node_types(config: Mapping[str, Any]) -> dict[str, int]:
    """Node types that declare GPUs (``resources.GPU > 0``), with their GPU count."""
    found: dict[str, int] = {}
    for name, node_type in (config.get("available_node_types") or {}).items():
        gpus = _declared_gpus(node_type)
        if gpus:
            found[str(name)] = int(gpus)
    return found


def ray_version_pins(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every exact Ray version the config's setup commands install, as (key path, version)."""
    return [(path, version) for path, version, loose in _ray_specs(config) if not loose]


# --- Ray's own validation ---------------------------------------------------------------------


def _ray_checks(raw: dict[str, Any]) -> tuple[dict[str, Any] | None, list[Problem], Exception | None]:
    """Run Ray's prepare_config and validate_config; return (prepared config, problems, schema error).

    Both are offline: ``prepare_config`` merges the provider's packaged defaults.yaml
    (fillout_defaults), prepends setup_commands to head/worker_setup_commands
    (merge_setup_commands), checks the docker block and fills per-node-type min/max workers; for
    ``local`` it rewrites the node list from head_ip/worker_ips. ``validate_config`` is the JSON
    schema plus a few cross-field checks. What ``ray up`` does next needs the cloud and is skipped:
    ``fillout_available_node_types_resources`` (AWS: DescribeInstanceTypes, to detect CPUs/GPUs)
    and ``bootstrap_config`` (IAM roles, key pairs, subnets, security groups, AMI).
    """
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    try:
        with _quiet_ray_logs():
            prepared = prepare_config(copy.deepcopy(raw))
    except Exception as exc:  # noqa: BLE001 - Ray reports config mistakes as assorted exception types
        message = str(exc) or type(exc).__name__
        return None, [Problem(_guess_path(message), f"Ray's prepare_config rejects it: {message}")], None
    try:
        validate_config(prepared)
    except jsonschema.ValidationError as exc:
        return prepared, _schema_problems(prepared) or _validation_error_problems(exc), exc
    except (ValueError, RuntimeError, TypeError) as exc:
        return prepared, [Problem(_guess_path(str(exc)), f"Ray's validate_config rejects it: {exc}")], None
    return prepared, [], None


def _schema_problems(config: Mapping[str, Any], ignore_required_top_level: bool = False) -> list[Problem]:
    """Every error of Ray's JSON schema (``validate_config`` stops at the first), as problems."""
    import jsonschema
    import ray.autoscaler

    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    problems: list[Problem] = []
    for error in sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path]):
        if ignore_required_top_level and error.validator == "required" and not error.absolute_path:
            continue  # a raw config gets cluster_name etc. from Ray's defaults
        problems += _validation_error_problems(error)
    return problems


def _validation_error_problems(error: Any) -> list[Problem]:
    """Turn one jsonschema ValidationError into problems that name the failing key."""
    parts = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        allowed = set((error.schema or {}).get("properties", {}))
        patterns = list((error.schema or {}).get("patternProperties", {}))
        extras = [k for k in error.instance if k not in allowed and not any(re.search(p, str(k)) for p in patterns)]
        if extras:
            return [Problem(_key_path([*parts, k]), f"unknown key, not allowed by Ray's cluster schema{_suggest(str(k), allowed)}")
                    for k in extras]
    if error.validator == "required":
        match = re.match(r"'(.+?)' is a required property", error.message)
        if match:
            return [Problem(_key_path([*parts, match.group(1)]), "required by Ray's cluster schema, missing")]
    return [Problem(_key_path(parts) or "<top level>", f"{error.message} (Ray's cluster schema)")]


@contextlib.contextmanager
def _quiet_ray_logs() -> Iterator[None]:
    """Silence prepare_config's output: INFO lines ("setting max workers for head node type to 0") and the
    PANIC line its cli_logger prints before raising (the exception carries the same message)."""
    logger = logging.getLogger("ray.autoscaler._private.util")
    level = logger.level
    logger.setLevel(logging.WARNING)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        logger.setLevel(level)


def _guess_path(message: str) -> str:
    """The config key a free-text Ray error message is about, or ``<config>``."""
    for key in ("head_node_type", "available_node_types", "cluster_synced_files", "file_mounts_sync_continuously",
                "max_workers", "head_ip", "worker_ips", "docker", "provider"):
        if key in message:
            return key
    if "container" in message or "image" in message:
        return "docker"
    return "<config>"


# --- rankcse's own checks ---------------------------------------------------------------------


def _provider_type(raw: Mapping[str, Any]) -> str | None:
    """``provider.type`` when it is a provider Ray knows, else None."""
    provider = raw.get("provider")
    ptype = provider.get("type") if isinstance(provider, Mapping) else None
    return ptype if isinstance(ptype, str) and ptype in KNOWN_PROVIDERS else None


def _provider_problems(raw: Mapping[str, Any]) -> list[Problem]:
    """The provider block: a known type and that type's required keys."""
    provider = raw.get("provider")
    if not isinstance(provider, Mapping):
        return [Problem("provider", "missing or not a mapping; it needs at least `type` (aws, gcp, azure, local, ...)")]
    ptype = provider.get("type")
    if not isinstance(ptype, str) or not ptype:
        return [Problem("provider.type", f"missing; one of {', '.join(KNOWN_PROVIDERS)}")]
    if ptype not in KNOWN_PROVIDERS:
        return [Problem("provider.type", f"unknown provider {ptype!r}; one of {', '.join(KNOWN_PROVIDERS)}")]
    problems = []
    for key in REQUIRED_PROVIDER_KEYS.get(ptype, ()):
        value = provider.get(key)
        if not isinstance(value, str) or not value.strip():
            problems.append(Problem(f"provider.{key}", f"required for provider type {ptype!r} (a non-empty string)"))
    if ptype == "local" and "coordinator_address" not in provider:
        if not isinstance(provider.get("head_ip"), str) or not provider.get("head_ip"):
            problems.append(Problem("provider.head_ip", "required for provider type 'local' (or give coordinator_address)"))
        ips = provider.get("worker_ips")
        if not isinstance(ips, list) or not all(isinstance(ip, str) and ip for ip in ips):
            problems.append(Problem("provider.worker_ips", "required for provider type 'local': a list of host names or IPs"))
    return problems


def _node_types(raw: Mapping[str, Any], prepared: Mapping[str, Any] | None) -> dict[str, Any]:
    """The node types to check: the file's own (for its key paths), else the ones Ray filled in."""
    node_types = raw.get("available_node_types")
    if not isinstance(node_types, Mapping) and prepared is not None:
        node_types = prepared.get("available_node_types")
    if not isinstance(node_types, Mapping):
        return {}
    return {str(k): v for k, v in node_types.items() if isinstance(v, Mapping)}


def _instance_type_problems(provider_type: str, node_types: Mapping[str, Any]) -> list[Problem]:
    """Each node type names its instance type, and the GPUs it declares exist on that instance type."""
    key = INSTANCE_TYPE_KEYS[provider_type]
    problems: list[Problem] = []
    for name, node_type in node_types.items():
        base = f"available_node_types.{name}"
        node_config = node_type.get("node_config")
        if not isinstance(node_config, Mapping):
            problems.append(Problem(f"{base}.node_config", "missing or not a mapping"))
            continue
        instance = _dig(node_config, key)
        instance_path = _key_path([base, "node_config", *key])
        if not isinstance(instance, str) or not instance.strip():
            problems.append(Problem(instance_path, f"missing: the {provider_type} instance type of node type {name!r}"))
            continue
        gpus = _declared_gpus(node_type)
        if gpus is None:
            problems.append(Problem(f"{base}.resources.GPU", "must be a non-negative integer"))
        elif gpus > 0:
            problems += _gpu_capacity_problems(provider_type, base, instance_path, instance, node_config, gpus)
    return problems


def _gpu_capacity_problems(provider_type: str, base: str, instance_path: str, instance: str,
                           node_config: Mapping[str, Any], gpus: float) -> list[Problem]:
    """A node type declares ``gpus`` GPUs: the instance type must have at least that many."""
    where = f"{base}.resources.GPU"
    short = instance_path.removeprefix(base + ".")
    if provider_type == "aws":
        have = AWS_GPU_INSTANCES.get(instance.strip().lower())
        if have is None:
            if _AWS_CPU_ONLY.match(instance.strip().lower()):
                return [Problem(where, f"declares {gpus:g} GPU(s) but {short} {instance} is a CPU-only instance type; "
                                       "use a GPU type (g5.xlarge, g6.xlarge, p4d.24xlarge, ...) or GPU: 0")]
            return [Problem(where, f"declares {gpus:g} GPU(s) but {short} {instance} is not a known AWS GPU instance type "
                                   f"(known: {_families(AWS_GPU_INSTANCES)}; extend AWS_GPU_INSTANCES in rayjobs/cluster_config.py)")]
    elif provider_type == "azure":
        have = AZURE_GPU_SIZES.get(instance.strip().lower())
        if have is None:
            kind = "a CPU-only VM size" if _AZURE_CPU_ONLY.match(instance.strip()) else "not a known Azure GPU VM size"
            return [Problem(where, f"declares {gpus:g} GPU(s) but {short} {instance} is {kind} "
                                   "(GPU sizes: Standard_NC*/ND*/NV*, e.g. Standard_NC4as_T4_v3; extend AZURE_GPU_SIZES)")]
    else:  # gcp: GPUs are attached with guestAccelerators, or come with a2/a3/g2 machine types
        return _gcp_gpu_problems(base, instance, node_config, gpus)
    if have < gpus:
        return [Problem(where, f"declares {gpus:g} GPUs but {short} {instance} has {have}")]
    return []


def _gcp_gpu_problems(base: str, machine_type: str, node_config: Mapping[str, Any], gpus: float) -> list[Problem]:
    """GCP: GPUs = guestAccelerators' acceleratorCount (+ the GPUs an a2/a3/g2 machine type comes with)."""
    problems: list[Problem] = []
    attached = 0
    accelerators = node_config.get("guestAccelerators") or []
    if not isinstance(accelerators, list):
        return [Problem(f"{base}.node_config.guestAccelerators", "must be a list of {acceleratorType, acceleratorCount}")]
    for i, acc in enumerate(accelerators):
        count = acc.get("acceleratorCount") if isinstance(acc, Mapping) else None
        if not isinstance(acc, Mapping) or not isinstance(acc.get("acceleratorType"), str) or not isinstance(count, int) or count < 1:
            problems.append(Problem(f"{base}.node_config.guestAccelerators[{i}]",
                                    "needs acceleratorType (e.g. nvidia-tesla-t4) and acceleratorCount (a positive integer)"))
        else:
            attached += count
    builtin = GCP_G2_GPUS.get(machine_type.strip().lower(), 0)
    match = _GCP_BUILTIN_GPUS.match(machine_type.strip().lower())
    if match:
        builtin = int(match.group(1))
    if problems:
        return problems
    have = attached + builtin
    if have == 0:
        return [Problem(f"{base}.resources.GPU", f"declares {gpus:g} GPU(s) but node_config.machineType {machine_type} has none "
                                                  "and node_config.guestAccelerators attaches none")]
    if have < gpus:
        return [Problem(f"{base}.resources.GPU", f"declares {gpus:g} GPUs but the node has {have} "
                                                  "(node_config.guestAccelerators acceleratorCount + the machine type's own)")]
    if attached and _gcp_on_host_maintenance(node_config) != "TERMINATE":
        return [Problem(f"{base}.node_config.scheduling", "VMs with guestAccelerators cannot live-migrate: "
                                                           "set scheduling: [{onHostMaintenance: TERMINATE}]")]
    return []


def _gcp_on_host_maintenance(node_config: Mapping[str, Any]) -> str | None:
    """``scheduling.onHostMaintenance``, with scheduling as a mapping or (as in Ray's examples) a list of mappings."""
    scheduling = node_config.get("scheduling")
    items = scheduling if isinstance(scheduling, list) else [scheduling]
    for item in items:
        if isinstance(item, Mapping) and "onHostMaintenance" in item:
            return str(item["onHostMaintenance"]).upper()
    return None


def _ray_specs(config: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """(key path, version or operator, loose) for every Ray requirement in the config's setup commands."""
    found: list[tuple[str, str, bool]] = []
    for path, command in _commands(config):
        for match in _RAY_PIN.finditer(command):
            found.append((path, match.group(1), False))
        for match in _RAY_WHEEL.finditer(command):
            found.append((path, match.group(1), False))
        for match in _RAY_LOOSE.finditer(command):
            found.append((path, match.group(0), True))
    return found


def _commands(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key path, command) of the global and per-node-type setup command lists."""
    lists: list[tuple[str, Any]] = [(key, config.get(key)) for key in _COMMAND_LISTS]
    node_types = config.get("available_node_types")
    if isinstance(node_types, Mapping):
        for name, node_type in node_types.items():
            if isinstance(node_type, Mapping) and "worker_setup_commands" in node_type:
                lists.append((f"available_node_types.{name}.worker_setup_commands", node_type["worker_setup_commands"]))
    return [(f"{key}[{i}]", cmd) for key, cmds in lists if isinstance(cmds, list) for i, cmd in enumerate(cmds) if isinstance(cmd, str)]


def _ray_pin_problems(raw: Mapping[str, Any], driver_version: str) -> list[Problem]:
    """Every node installs exactly ``driver_version`` of Ray, pinned in its setup commands."""
    problems: list[Problem] = []
    specs = _ray_specs(raw)
    for path, version, loose in specs:
        if loose:
            problems.append(Problem(path, f"installs Ray with {version!r}, not an exact pin; use \"ray[default,tune]=={driver_version}\""))
        elif not _same_version(version, driver_version):
            problems.append(Problem(path, f"pins ray {version} but the driver runs ray {driver_version}; "
                                          f"the cluster's Ray must equal the driver's (\"ray[default,tune]=={driver_version}\")"))
    pinned = {path.split("[")[0] for path, _, loose in specs if not loose}
    install = f'`pip install "ray[default,tune]=={driver_version}"`'
    fix = f"add {install} to setup_commands"
    if not pinned:
        return problems + [Problem("setup_commands", f"no command pins the Ray version (ray==X / ray[...]==X); {fix}, the driver's Ray")]
    if not pinned & {"setup_commands", "head_setup_commands"}:
        problems.append(Problem("head_setup_commands", f"the head node never installs a pinned Ray; {fix}"))
    head = raw.get("head_node_type")
    node_types = raw.get("available_node_types")
    worker_types = [n for n in node_types if n != head] if isinstance(node_types, Mapping) else ["<workers>"]
    for name in worker_types:
        own = f"available_node_types.{name}.worker_setup_commands"
        node_type = node_types.get(name) if isinstance(node_types, Mapping) else None
        overrides = isinstance(node_type, Mapping) and "worker_setup_commands" in node_type
        covered = own in pinned if overrides else bool(pinned & {"setup_commands", "worker_setup_commands"})
        if not covered:
            where = own if overrides else "worker_setup_commands"
            to = own if overrides else "setup_commands"  # a node type's own list replaces the global ones
            problems.append(Problem(where, f"worker node type {name!r} never installs a pinned Ray; add {install} to {to}"))
    return problems


def _gpu_presence_problems(raw: Mapping[str, Any], prepared: Mapping[str, Any] | None, node_types: Mapping[str, Any]) -> list[Problem]:
    """At least one node type with GPUs that the autoscaler can actually start."""
    config = prepared if prepared is not None else raw
    head = config.get("head_node_type")
    global_max = _as_int(config.get("max_workers"))
    if global_max is None:  # missing or not an integer: Ray's schema reports it
        return []
    for name, node_type in node_types.items():
        if not _declared_gpus(node_type):
            continue
        own_max = node_type.get("max_workers", global_max)
        if name == head or _as_int(own_max) is None or min(global_max, own_max) > 0:  # a non-integer: the schema says so
            return []
    has_gpu_types = [n for n, t in node_types.items() if _declared_gpus(t)]
    if has_gpu_types:
        return [Problem("max_workers", f"the GPU node types ({', '.join(has_gpu_types)}) can never start: their max_workers "
                                       "(or the global max_workers) is 0")]
    return [Problem("available_node_types", "no node type declares GPUs (resources: {CPU: n, GPU: k}); the sweep's trials "
                                            "train on GPUs (pass require_gpu=False / --no-require-gpu for a CPU cluster)")]


# --- small helpers ----------------------------------------------------------------------------


def _declared_gpus(node_type: Any) -> float | None:
    """``resources.GPU`` of a node type (0 when absent), or None when it is not a non-negative number."""
    resources = node_type.get("resources") if isinstance(node_type, Mapping) else None
    if not isinstance(resources, Mapping):
        return 0
    value = resources.get("GPU", 0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return None
    return value


def _as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _dig(mapping: Mapping[str, Any], keys: Sequence[str]) -> Any:
    value: Any = mapping
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _key_path(parts: Sequence[Any]) -> str:
    """``["available_node_types", "ray.worker.gpu", "max_workers"]`` -> ``available_node_types.ray.worker.gpu.max_workers``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _same_version(a: str, b: str) -> bool:
    try:
        from packaging.version import InvalidVersion, Version
    except ImportError:  # pragma: no cover - packaging comes with ray
        return a.strip() == b.strip()
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a.strip() == b.strip()


def _suggest(key: str, allowed: set[str]) -> str:
    """`` (did you mean 'x'?)`` for a misspelt key, else the allowed keys."""
    close = difflib.get_close_matches(key, sorted(allowed), n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (allowed here: {', '.join(sorted(allowed))})" if allowed else ""


def _families(table: Mapping[str, int]) -> str:
    return ", ".join(sorted({name.split(".")[0] + ".*" for name in table}))


def _instance_type(config: Mapping[str, Any], node_type: Mapping[str, Any]) -> str | None:
    provider_type = (config.get("provider") or {}).get("type")
    key = INSTANCE_TYPE_KEYS.get(provider_type)
    node_config = node_type.get("node_config")
    return _dig(node_config, key) if key and isinstance(node_config, Mapping) else None


def summary(config: Mapping[str, Any], driver_ray_version: str) -> str:
    """One line about a valid, prepared config: Ray version, node types, GPU workers."""
    node_types = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    gpu_types = []
    for name, gpus in gpu_node_types(config).items():
        node_type = node_types[name]
        instance = _instance_type(config, node_type)
        role = "head" if name == head else f"{node_type.get('min_workers', 0)}-{node_type.get('max_workers', 0)} nodes"
        gpu_types.append(f"{name} ({', '.join(x for x in (instance, f'{gpus} GPU', role) if x)})")
    gpus = "; ".join(gpu_types) or "none"
    return f"valid (ray {driver_ray_version}, {len(node_types)} node types, GPU workers: {gpus})"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rayjobs.cluster_config cluster.yaml``: exit 0 when valid, 2 with the problems."""
    parser = argparse.ArgumentParser(prog="python -m rayjobs.cluster_config", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="+", help="cluster launcher YAML file(s), e.g. cluster.yaml")
    parser.add_argument("--driver-ray-version", help="the Ray version the driver runs (default: the installed ray)")
    parser.add_argument("--no-require-gpu", action="store_true", help="accept a cluster without GPU node types")
    args = parser.parse_args(argv)
    if args.driver_ray_version is None:
        import ray

        args.driver_ray_version = ray.__version__
    status = 0
    for path in args.config:
        try:
            prepared = validate_cluster_config(path, args.driver_ray_version, require_gpu=not args.no_require_gpu)
        except ClusterConfigError as exc:
            print(exc, file=sys.stderr)
            status = 2
            continue
        print(f"{path}: {summary(prepared, args.driver_ray_version)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
