"""The cluster files, checked the way Ray and KubeRay would check them.

- Every Ray cluster launcher file in cluster/ passes Ray's own checks, the ones `ray up` runs before it
  contacts a cloud: `prepare_config` (the provider's defaults merged in) then `validate_config` (Ray's
  ray-schema.json through jsonschema, head / worker node type checks), both from the installed Ray.
- Its `ray start` lines parse with Ray's own `ray start` command line (tests/test_integration_cluster.py
  runs the head's line for real).
- The KubeRay RayJob uses only fields of the KubeRay version the README targets, with their CRD types.
- The Ray version of the cluster files (launcher install, rayVersion, image) is the one pyproject pins.
- Every job command parses with the package's own argument parsers.
"""

from __future__ import annotations

import copy
import re
import shlex
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
import yaml
from cli_commands import PARSERS, parse
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.scripts.scripts import start as ray_start_cli

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as vendored by pip
    from pip._vendor import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "cluster"
LAUNCHER = CLUSTER / "autovit-cluster.yaml"
JOBS = CLUSTER / "jobs.yaml"
RAYJOB = CLUSTER / "rayjob-pipeline.yaml"
DOCKERFILE = CLUSTER / "Dockerfile"
PIPELINE_STAGES = {"autovit_ray.train", "autovit_ray.profile", "autovit_ray.search", "autovit_ray.export",
                   "autovit_ray.compare", "autovit_ray.pipeline"}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def cluster_yaml_files() -> tuple[list[Path], list[Path]]:
    """(Ray cluster launcher files, Kubernetes manifests): every YAML file in cluster/ but the jobs file."""
    launchers: list[Path] = []
    manifests: list[Path] = []
    for path in sorted([*CLUSTER.glob("*.yaml"), *CLUSTER.glob("*.yml")]):
        if path != JOBS:
            (manifests if "apiVersion" in load(path) else launchers).append(path)
    return launchers, manifests


LAUNCHERS, MANIFESTS = cluster_yaml_files()


def cluster_ray_version() -> str:
    """The Ray version pinned for clusters: `ray[...]==X` in pyproject.toml's `cluster` extra."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    extra = pyproject["project"]["optional-dependencies"]["cluster"]
    pins = [m.group(1) for req in extra if (m := re.fullmatch(r"ray(?:\[[\w,]*\])?==([\w.]+)", req.strip()))]
    assert len(pins) == 1, f"pyproject.toml's `cluster` extra must pin ray with == exactly once: {extra}"
    return pins[0]


# ---------------------------------------------------------------------------------------------------
# Ray cluster launcher files


def ray_up_checks(config: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` checks before it contacts the cloud (ray.autoscaler._private.commands
    ._bootstrap_config): Ray's prepare_config, then Ray's validate_config. Raises
    jsonschema.ValidationError (or ValueError) on a config Ray rejects; returns the prepared config."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def ray_start_line(commands: Sequence[str]) -> tuple[dict[str, str], list[tuple[str, str | None]]]:
    """The one `ray start` line among a launcher's start commands (`ray stop` and any other line are
    skipped): (its leading VAR=value assignments, its options as (name, value, or None for a flag)).
    The options are read with Ray's own `ray start` command, which rejects an option it does not have."""
    found = []
    for command in commands:
        words = shlex.split(command)
        env: dict[str, str] = {}
        while words and re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):
            name, _, value = words.pop(0).partition("=")
            env[name] = value
        if words[:2] == ["ray", "start"]:
            found.append((env, words[2:]))
    assert len(found) == 1, f"expected exactly one plain `ray start ...` line in {list(commands)}"
    env, args = found[0]
    ray_start_cli.make_context("ray start", list(args))  # click.UsageError on an unknown option or bad value
    flags = {opt for param in ray_start_cli.params if getattr(param, "is_flag", False) for opt in param.opts}
    options: list[tuple[str, str | None]] = []
    while args:
        word = args.pop(0)
        assert word.startswith("--"), f"unexpected argument {word!r} in `ray start` line of {list(commands)}"
        name, eq, value = word.partition("=")
        options.append((name, value) if eq else (name, None) if name in flags else (name, args.pop(0)))
    return env, options


def test_cluster_files_are_known():
    assert LAUNCHER in LAUNCHERS
    assert MANIFESTS == [RAYJOB], f"only RayJob manifests are checked below, found {MANIFESTS}"


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_file_passes_ray_validation(path):
    prepared = ray_up_checks(load(path))
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_ray_validation_rejects_unknown_top_level_key():
    """The check that caught the job commands stored under a `jobs:` key in the launcher file."""
    config = load(LAUNCHER)
    config["jobs"] = {"train": "python -m autovit_ray.train --config imagenet"}
    with pytest.raises(jsonschema.ValidationError, match=r"Additional properties are not allowed \('jobs' was"):
        ray_up_checks(config)


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_start_commands_parse_with_ray_start(path):
    """Token auth on every node, each `ray start` line valid for Ray's `ray start`, the token mounted."""
    config = load(path)
    head_env, head = ray_start_line(config["head_start_ray_commands"])
    worker_env, worker = ray_start_line(config["worker_start_ray_commands"])
    assert head_env.get("RAY_AUTH_MODE") == "token" and worker_env.get("RAY_AUTH_MODE") == "token"
    assert ("--head", None) in head and any(name == "--address" for name, _ in worker)
    mounts = config.get("file_mounts", {})
    assert any(remote.endswith("/.ray/auth_token") for remote in mounts), f"no token in file_mounts: {mounts}"


def test_ray_start_line_rejects_unknown_option():
    with pytest.raises(click.UsageError, match="No such option"):
        ray_start_line(["ray stop", "RAY_AUTH_MODE=token ray start --head --no-such-option=1"])


# ---------------------------------------------------------------------------------------------------
# KubeRay RayJob

KUBERAY_VERSION = "v1.6.2"

# The RayJob fields the manifests may use, with their types in the RayJob CRD of KubeRay v1.6.2
# (ray-operator/config/crd/bases/ray.io_rayjobs.yaml; the API reference generated for v1.6.2). A path
# step `[]` is every item of a list; a tuple is the enum of allowed values. Anything else is an error.
RAYJOB_FIELDS: dict[str, str | tuple[str, ...]] = {
    "apiVersion": ("ray.io/v1",),
    "kind": ("RayJob",),
    "metadata": "object",
    "metadata.name": "string",
    "spec": "object",
    "spec.entrypoint": "string",
    "spec.submissionMode": "string",
    "spec.activeDeadlineSeconds": "int32",
    "spec.shutdownAfterJobFinishes": "boolean",
    "spec.ttlSecondsAfterFinished": "int32",
    "spec.rayClusterSpec": "object",
    "spec.rayClusterSpec.rayVersion": "string",
    "spec.rayClusterSpec.authOptions": "object",
    "spec.rayClusterSpec.authOptions.mode": ("disabled", "token"),
    "spec.rayClusterSpec.authOptions.secretName": "string",
    # RayClusterSpec (ray-operator/apis/ray/v1/raycluster_types.go): the in-tree autoscaler and its options
    "spec.rayClusterSpec.enableInTreeAutoscaling": "boolean",
    "spec.rayClusterSpec.autoscalerOptions": "object",
    "spec.rayClusterSpec.autoscalerOptions.upscalingMode": ("Default", "Aggressive", "Conservative"),
    "spec.rayClusterSpec.autoscalerOptions.idleTimeoutSeconds": "int32",
    "spec.rayClusterSpec.headGroupSpec": "object",
    "spec.rayClusterSpec.headGroupSpec.rayStartParams": "map[string]string",
    "spec.rayClusterSpec.workerGroupSpecs": "array",
    "spec.rayClusterSpec.workerGroupSpecs[].groupName": "string",
    "spec.rayClusterSpec.workerGroupSpecs[].replicas": "int32",
    "spec.rayClusterSpec.workerGroupSpecs[].minReplicas": "int32",
    "spec.rayClusterSpec.workerGroupSpecs[].maxReplicas": "int32",
    "spec.rayClusterSpec.workerGroupSpecs[].rayStartParams": "map[string]string",
}
# The pod templates are Kubernetes core/v1 PodTemplateSpec (embedded in the CRD); the fields used here.
POD_TEMPLATE_FIELDS: dict[str, str | tuple[str, ...]] = {
    "": "object",
    "spec": "object",
    "spec.containers": "array",
    "spec.containers[].name": "string",
    "spec.containers[].image": "string",
    "spec.containers[].resources": "object",
    "spec.containers[].resources.limits": "map[string]quantity",
    "spec.containers[].resources.requests": "map[string]quantity",
    "spec.containers[].env": "array",
    "spec.containers[].env[].name": "string",
    "spec.containers[].env[].value": "string",
    "spec.restartPolicy": ("Always", "OnFailure", "Never"),
    "spec.containers[].volumeMounts": "array",
    "spec.containers[].volumeMounts[].name": "string",
    "spec.containers[].volumeMounts[].mountPath": "string",
    "spec.volumes": "array",
    "spec.volumes[].name": "string",
    "spec.volumes[].persistentVolumeClaim": "object",
    "spec.volumes[].persistentVolumeClaim.claimName": "string",
    "spec.volumes[].emptyDir": "object",  # core/v1 EmptyDirVolumeSource
    "spec.volumes[].emptyDir.medium": "string",
    "spec.volumes[].emptyDir.sizeLimit": "quantity",
}
for _template in ("spec.rayClusterSpec.headGroupSpec.template", "spec.rayClusterSpec.workerGroupSpecs[].template"):
    RAYJOB_FIELDS.update({f"{_template}.{k}" if k else _template: v for k, v in POD_TEMPLATE_FIELDS.items()})
RAYJOB_FIELDS.update({f"{path}[]": "object" for path, kind in list(RAYJOB_FIELDS.items()) if kind == "array"})
# Required by the CRD wherever their parent is present.
RAYJOB_REQUIRED = (
    "spec.rayClusterSpec.headGroupSpec", "spec.rayClusterSpec.headGroupSpec.template",
    "spec.rayClusterSpec.workerGroupSpecs[].groupName", "spec.rayClusterSpec.workerGroupSpecs[].template",
    "spec.rayClusterSpec.headGroupSpec.template.spec.containers",
    "spec.rayClusterSpec.headGroupSpec.template.spec.containers[].name",
    "spec.rayClusterSpec.workerGroupSpecs[].template.spec.containers[].name",
)
MAP_TYPES = ("map[string]string", "map[string]quantity")


def _type_ok(kind: str | tuple[str, ...], value: Any) -> bool:
    if isinstance(kind, tuple):
        return value in kind
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "int32":
        return type(value) is int and -(2**31) <= value < 2**31
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "map[string]string":
        return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    if kind == "quantity":  # int-or-string
        return type(value) in (int, str)
    if kind == "map[string]quantity":  # int-or-string
        return isinstance(value, dict) and all(type(v) in (int, str) for v in value.values())
    raise ValueError(f"unknown field type {kind!r}")


def _walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, value) of every field; maps and unknown fields are not entered."""
    if path:
        yield path, value
        if path not in RAYJOB_FIELDS or RAYJOB_FIELDS[path] in MAP_TYPES:
            return
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item, f"{path}[]")


def rayjob_errors(manifest: dict[str, Any]) -> list[str]:
    """Every field of the manifest not in RAYJOB_FIELDS, of the wrong type, or required and missing."""
    errors = []
    seen: Counter[str] = Counter()
    for path, value in _walk(manifest):
        seen[path] += 1
        if path not in RAYJOB_FIELDS:
            errors.append(f"{path}: not a field of the KubeRay {KUBERAY_VERSION} RayJob CRD (as listed in the test)")
        elif not _type_ok(RAYJOB_FIELDS[path], value):
            errors.append(f"{path}: {value!r} is not of type {RAYJOB_FIELDS[path]}")
    for path in RAYJOB_REQUIRED:
        parent = path.rsplit(".", 1)[0]
        if seen[path] < seen[parent]:
            errors.append(f"{path}: required")
    return errors


def test_rayjob_fields_and_types_match_the_crd():
    errors = rayjob_errors(load(RAYJOB))
    assert not errors, "\n".join(errors)


def test_rayjob_check_catches_unknown_fields_and_wrong_types():
    manifest = load(RAYJOB)
    manifest["spec"]["ttlSecondAfterFinished"] = 60                      # misspelt
    manifest["spec"]["activeDeadlineSeconds"] = "3600"                   # a string
    manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["rayStartParams"] = {"num-gpus": 1}
    del manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["groupName"]
    errors = rayjob_errors(manifest)
    assert len(errors) == 4, errors
    assert any(e.startswith("spec.ttlSecondAfterFinished: not a field") for e in errors)


def test_rayjob_submitter_gets_the_token_and_the_job_is_bounded():
    manifest = load(RAYJOB)
    spec = manifest["spec"]
    cluster = spec["rayClusterSpec"]
    # KubeRay's own token option: the operator sets RAY_AUTH_MODE / RAY_AUTH_TOKEN (from the Secret) on
    # every Ray container and on the submitter pod of K8sJobMode, and uses the token itself.
    assert cluster["authOptions"]["mode"] == "token" and cluster["authOptions"]["secretName"]
    assert spec["submissionMode"] == "K8sJobMode"
    containers = [c for group in (cluster["headGroupSpec"], *cluster["workerGroupSpecs"])
                  for c in group["template"]["spec"]["containers"]]
    by_hand = [e["name"] for c in containers for e in c.get("env", []) if e["name"].startswith("RAY_AUTH")]
    assert not by_hand, f"RAY_AUTH_* set by hand next to authOptions: {by_hand}"
    readme = (REPO / "README.md").read_text()
    assert f"kubectl create secret generic {cluster['authOptions']['secretName']} --from-file=auth_token=" in readme
    # Bounded and cleaned up.
    assert spec["activeDeadlineSeconds"] > 0
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0


def test_cluster_ray_version_is_the_pinned_one():
    version = cluster_ray_version()
    cluster = load(RAYJOB)["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == version
    images = [c["image"] for group in (cluster["headGroupSpec"], *cluster["workerGroupSpecs"])
              for c in group["template"]["spec"]["containers"]]
    assert all(image.rsplit(":", 1)[-1] == f"ray-{version}" for image in images), images
    # The image: Ray's image of that version, with the pinned extra installed.
    dockerfile = DOCKERFILE.read_text()
    assert re.search(rf"^FROM rayproject/ray:{re.escape(version)}-\S+$", dockerfile, re.M), dockerfile
    assert re.search(r"^RUN pip install .*\.\[cluster\]", dockerfile, re.M), dockerfile
    # The launcher nodes install the same extra.
    for path in LAUNCHERS:
        assert any("[cluster]" in c for c in load(path)["setup_commands"]), path


def test_readme_names_the_targets():
    readme = (REPO / "README.md").read_text()
    for text in (f"KubeRay {KUBERAY_VERSION}", f"Ray {cluster_ray_version()}", "cluster/jobs.yaml",
                 "cluster/Dockerfile"):
        assert text in readme, f"README.md does not mention {text!r}"


# ---------------------------------------------------------------------------------------------------
# Job commands


def commands() -> list[str]:
    return [*load(JOBS).values(), *load(RAYJOB)["spec"]["entrypoint"].split("&&")]


@pytest.mark.parametrize("command", commands())
def test_cluster_command_parses(command):
    argv = shlex.split(command)
    assert argv[:2] == ["python", "-m"] and argv[2] in PARSERS, command
    parse(argv[2], argv[3:])


def test_every_stage_is_covered():
    modules = {shlex.split(c)[2] for c in commands()}
    assert modules == PIPELINE_STAGES


@pytest.mark.parametrize("command", [c for c in commands() if shlex.split(c)[2] in
                                     ("autovit_ray.train", "autovit_ray.pipeline")])
def test_cluster_configs_resolve(command):
    """Beyond the flags: every `--set` field and config file a cluster job names exists."""
    from autovit_ray.pipeline import load_pipeline_config
    from autovit_ray.train import config_from_args
    from autovit_ray.training.config import load_config

    argv = shlex.split(command)
    args = parse(argv[2], argv[3:])
    if argv[2] == "autovit_ray.train":
        assert config_from_args(args).data.data_dir
    else:
        cfg = load_pipeline_config(args.config, args.set)
        assert load_config(cfg.train.config, cfg.train.set).data.data_dir
