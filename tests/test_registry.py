"""Searched models as MLflow Models and in the Model Registry (autovit_ray.registry), without Ray.

A tiny digits subnet is logged once into a fresh sqlite tracking store; versions are registered
from several runs to exercise the `champion` rule, and read back through `models:/` URIs.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from autovit_ray.export_cli import check_registered_matches
from autovit_ray.registry import (
    CHAMPION,
    register,
    registered_model_name,
    resolve_model_uri,
    using_tracking_uri,
)
from autovit_ray.space import load_space


@pytest.fixture
def logged(registered_digits_model):
    return registered_digits_model


def test_logged_models_have_signature_example_and_load_back(logged):
    import mlflow

    assert set(logged["uris"]) == {"pyfunc", "onnx"}
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        expected = logged["model"](x).numpy()
    with using_tracking_uri(logged["uri"]):
        for flavour in ("pyfunc", "onnx"):
            info = mlflow.models.get_model_info(logged["uris"][flavour])
            assert info.signature is not None and info.saved_input_example_info is not None
            out = mlflow.pyfunc.load_model(logged["uris"][flavour]).predict(x.numpy())
            out = np.asarray(next(iter(out.values())) if isinstance(out, dict) else out)
            assert np.abs(out - expected).max() <= 1e-4
        with pytest.raises(Exception, match=r"does not match expected shape \(-1, 3, 8, 8\)"):  # the signature
            mlflow.pyfunc.load_model(logged["uris"]["pyfunc"]).predict(np.zeros((1, 3, 16, 16), np.float32))
    assert "MLFLOW_TRACKING_URI" not in os.environ  # nothing leaks into the rest of the process


def test_champion_moves_only_inside_its_budget_group_and_reruns_add_no_version(logged):
    from mlflow.tracking import MlflowClient

    uri, runs, facts, source = logged["uri"], logged["runs"], logged["facts"], logged["uris"]["pyfunc"]
    name = registered_model_name("digits demo", "xxs")
    assert name == "autovit-digits-demo-xxs"
    assert register(uri, name, source, runs[0], facts) == {"name": name, "version": 1, "champion": True}
    assert register(uri, name, source, runs[0], facts)["version"] == 1  # a rerun: no second version
    worse = register(uri, name, source, runs[1], dataclasses.replace(facts, val_top1=40.0))
    assert worse == {"name": name, "version": 2, "champion": False}
    better = register(uri, name, source, runs[2], dataclasses.replace(facts, val_top1=60.0))
    assert better == {"name": name, "version": 3, "champion": True}
    other_budget = register(uri, name, source, runs[3], dataclasses.replace(facts, val_top1=90.0, budgets="none"))
    assert other_budget == {"name": name, "version": 4, "champion": False}
    client = MlflowClient(uri, registry_uri=uri)
    champion = client.get_model_version_by_alias(name, CHAMPION)
    assert int(champion.version) == 3 and champion.tags["val_top1"] == "60.0000"
    assert client.get_model_version(name, "4").tags["budgets"] == "none"
    # the same run's model chosen again under another budget (a rerun with a new measured budget): a version
    # of that budget's group, not the version of the first
    again = register(uri, name, source, runs[0], dataclasses.replace(facts, budgets="measured_latency_ms<=5"))
    assert again == {"name": name, "version": 5, "champion": False}
    assert client.get_model_version(name, "5").tags["budgets"] == "measured_latency_ms<=5"


def test_models_uris_resolve_to_arch_and_weights(logged, tmp_path):
    name = registered_model_name("uris", "xxs")
    register(logged["uri"], name, logged["uris"]["pyfunc"], logged["runs"][0], logged["facts"])
    for spec in (f"models:/{name}@{CHAMPION}", f"models:/{name}/1"):
        found = resolve_model_uri(spec, logged["uri"], tmp_path / spec[-1])
        assert found.arch == logged["facts"].arch and found.num_classes == 10 and found.version == 1
        x = torch.randn(2, 3, 8, 8)
        with torch.no_grad():
            assert torch.allclose(found.build()(x), logged["model"](x), atol=1e-6)
    space = logged["space"]
    check_registered_matches(found, space, 10, Path("/ckpt"))
    with pytest.raises(ValueError, match="supernet 'xxs' with 10 classes; the checkpoint /ckpt is supernet 's' with 10"):
        check_registered_matches(found, load_space("s", input_profile="digits"), 10, Path("/ckpt"))
    with pytest.raises(ValueError, match="with 100 classes"):
        check_registered_matches(found, space, 100, Path("/ckpt"))
    other_profile = load_space("xxs", input_profile="cifar10")  # the same name, another network
    with pytest.raises(ValueError, match=r"searched in a space with fingerprint .*input profile 'cifar10'.*"
                                         r"its checkpoint tag: /ckpt"):
        check_registered_matches(found, other_profile, 10, Path("/ckpt"))
    older = dataclasses.replace(found, tags={k: v for k, v in found.tags.items() if k != "space_fingerprint"})
    check_registered_matches(older, other_profile, 10, Path("/ckpt"))  # logged before the tag: name and classes


@pytest.mark.parametrize("spec, message", [
    ("models:/nope@champion", "does not exist"),
    ("models:/autovit-uris-xxs/99", "does not exist"),
    ("models:/autovit-uris-xxs@nobody", "does not exist"),
    ("runs:/abc/model", "not a registered-model URI"),
    ("models:/a/b/c", "not a registered-model URI"),
])
def test_bad_model_uris_are_one_clear_error(logged, tmp_path, spec, message):
    register(logged["uri"], "autovit-uris-xxs", logged["uris"]["pyfunc"], logged["runs"][0], logged["facts"])
    with pytest.raises(ValueError, match=message):
        resolve_model_uri(spec, logged["uri"], tmp_path)


def test_a_version_that_is_not_a_searched_model_is_refused(logged, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(logged["uri"], registry_uri=logged["uri"])
    client.create_registered_model("plain")
    with using_tracking_uri(logged["uri"]):
        client.create_model_version("plain", logged["uris"]["pyfunc"], run_id=logged["runs"][0])
    with pytest.raises(ValueError, match="not an autovit-ray searched model"):
        resolve_model_uri("models:/plain/1", logged["uri"], tmp_path)


# ---------------------------------------------------------------------------------------------------
# Models of a user's own space: the space goes with the model, and the model is rebuilt in it


def _xxs_with_patch_size_1(directory: Path) -> Path:
    """An edited copy of xxs.yaml, still named xxs: its weights have the built-in space's shapes, so
    the built-in space would load them and compute other logits (1x1 patches instead of 2x2)."""
    import yaml

    from autovit_ray.space import load_space

    raw = load_space("xxs", input_profile="digits").to_yaml_dict()
    raw["fixed"]["patch_size"] = 1
    path = directory / "xxs-p1.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def user_space_models(registered_digits_model, tmp_path_factory):
    """A pyfunc model logged (`log_searched_model`, no ONNX) per user space: the toy dsconv space
    (no built-in namesake) and an edited xxs (a built-in namesake that differs), each in a run of its own."""
    from conftest import write_toy_space
    from mlflow.tracking import MlflowClient

    from autovit_ray.models import create_subnet, save_subnet
    from autovit_ray.registry import log_searched_model
    from autovit_ray.space import load_space

    uri, facts = registered_digits_model["uri"], registered_digits_model["facts"]
    root = tmp_path_factory.mktemp("user-spaces")
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("autovit-search").experiment_id
    out = {}
    for key, path in (("toy", write_toy_space(root)), ("xxs-p1", _xxs_with_patch_size_1(root))):
        space = load_space(path)
        arch = space.smallest()
        torch.manual_seed(1)
        model = create_subnet(arch, 10, space).eval()
        arch_path, weights = save_subnet(model, arch, root / key, "m")
        model_facts = dataclasses.replace(facts, arch=arch, space_fingerprint=space.fingerprint())
        run = client.create_run(experiment).info.run_id
        batch = torch.randn(4, 3, arch.resolution, arch.resolution)
        uris = log_searched_model(uri, run, model, model_facts, space, arch_path, weights, None, batch)
        out[key] = {"model": model, "space": space, "facts": model_facts, "run": run, "uri": uris["pyfunc"]}
    return out


def _logits(model, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).numpy()


def test_a_model_of_a_user_space_loads_back_and_serves_in_its_own_space(registered_digits_model,
                                                                         user_space_models, tmp_path):
    import mlflow

    from autovit_ray.models import create_subnet

    uri = registered_digits_model["uri"]
    x = torch.randn(3, 3, 8, 8)
    for key, logged in user_space_models.items():
        expected = _logits(logged["model"], x)
        name = f"autovit-user-{key}"
        register(uri, name, logged["uri"], logged["run"], logged["facts"])
        found = resolve_model_uri(f"models:/{name}@{CHAMPION}", uri, tmp_path / key)
        assert found.space is not None and found.space.fingerprint() == logged["space"].fingerprint()
        assert np.abs(_logits(found.build(), x) - expected).max() <= 1e-6
        with using_tracking_uri(uri):
            served = mlflow.pyfunc.load_model(f"models:/{name}/1").predict(x.numpy())
        assert np.abs(served - expected).max() <= 1e-5
    # what the built-in namesake would have built: the same weights load, the logits differ
    builtin = create_subnet(user_space_models["xxs-p1"]["facts"].arch, 10).eval()
    builtin.load_state_dict(user_space_models["xxs-p1"]["model"].state_dict())
    assert np.abs(_logits(builtin, x) - _logits(user_space_models["xxs-p1"]["model"], x)).max() > 1e-3


def test_a_space_that_does_not_match_the_model_is_refused(registered_digits_model, user_space_models, tmp_path):
    import mlflow
    import yaml

    from autovit_ray.registry import SPACE_ARTIFACT, log_searched_model

    uri, logged = registered_digits_model["uri"], user_space_models["toy"]
    recorded = logged["space"].fingerprint()
    # the pyfunc model: a copy whose space.yaml was edited (one stage's widths) is refused
    with using_tracking_uri(uri):
        local = Path(mlflow.artifacts.download_artifacts(logged["uri"], dst_path=str(tmp_path / "copy")))
    space_file = local / "artifacts" / SPACE_ARTIFACT
    raw = yaml.safe_load(space_file.read_text())
    raw["mbconv_stages"][0]["widths"] = [8, 16]
    space_file.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=rf"stored space space.yaml \(space 'toy', fingerprint [0-9a-f]{{16}}\) "
                                         rf"does not match the space fingerprint {recorded} recorded"):
        mlflow.pyfunc.load_model(str(local))
    # a registered version whose space_fingerprint tag is not its stored space's
    register(uri, "autovit-tampered", logged["uri"], logged["run"],
             dataclasses.replace(logged["facts"], space_fingerprint="0123456789abcdef"))
    with pytest.raises(ValueError, match=rf"models:/autovit-tampered/1 \(version 1\): its stored space space.yaml "
                                         rf"\(space 'toy', fingerprint {recorded}\) does not match the space "
                                         "fingerprint 0123456789abcdef"):
        resolve_model_uri("models:/autovit-tampered/1", uri, tmp_path / "resolved")
    # a space that is not the model's is refused when logging
    with pytest.raises(ValueError, match=r"space 'xxs' \(fingerprint [0-9a-f]{16}\) is not the space of the "
                                         rf"model's facts \(fingerprint {recorded}\)"):
        log_searched_model(uri, logged["run"], logged["model"], logged["facts"], registered_digits_model["space"],
                           Path("m.arch.json"), Path("m.pth"), None, torch.zeros(1, 3, 8, 8))


def test_a_model_logged_before_the_space_went_with_it_loads_in_the_built_in_space(registered_digits_model,
                                                                                  tmp_path):
    """The layout of the models registered before: arch, weights and info (no space_fingerprint), no space."""
    import json

    import mlflow
    from mlflow.tracking import MlflowClient

    from autovit_ray.registry import PYFUNC_MODEL, SERVING_CODE

    logged = registered_digits_model
    uri, facts, exports = logged["uri"], logged["facts"], logged["root"] / "exports"
    client = MlflowClient(uri)
    run = client.create_run(client.get_experiment_by_name("autovit-search").experiment_id).info.run_id
    info = tmp_path / "info.json"
    info.write_text(json.dumps({"num_classes": 10, "mean": list(facts.mean), "std": list(facts.std),
                                "arch": facts.arch.to_dict()}))
    with using_tracking_uri(uri), mlflow.start_run(run_id=run):
        model_uri = mlflow.pyfunc.log_model(
            name=PYFUNC_MODEL, python_model=str(SERVING_CODE),
            artifacts={"arch": str(exports / "m.arch.json"), "weights": str(exports / "m.pth"),
                       "info": str(info)}, pip_requirements=["torch"]).model_uri
    register(uri, "autovit-old-layout", model_uri, run, facts)
    found = resolve_model_uri("models:/autovit-old-layout/1", uri, tmp_path / "resolved")
    assert found.space is None
    x = torch.randn(2, 3, 8, 8)
    expected = _logits(logged["model"], x)
    assert np.abs(_logits(found.build(), x) - expected).max() <= 1e-6
    with using_tracking_uri(uri):
        served = mlflow.pyfunc.load_model("models:/autovit-old-layout/1").predict(x.numpy())
    assert np.abs(served - expected).max() <= 1e-5
