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


def test_models_uris_resolve_to_arch_and_weights(logged, tmp_path):
    name = registered_model_name("uris", "xxs")
    register(logged["uri"], name, logged["uris"]["pyfunc"], logged["runs"][0], logged["facts"])
    for spec in (f"models:/{name}@{CHAMPION}", f"models:/{name}/1"):
        found = resolve_model_uri(spec, logged["uri"], tmp_path / spec[-1])
        assert found.arch == logged["facts"].arch and found.num_classes == 10 and found.version == 1
        x = torch.randn(2, 3, 8, 8)
        with torch.no_grad():
            assert torch.allclose(found.build()(x), logged["model"](x), atol=1e-6)
    check_registered_matches(found, "xxs", 10, Path("/ckpt"))
    with pytest.raises(ValueError, match="supernet 'xxs' with 10 classes; the checkpoint /ckpt is supernet 's' with 10"):
        check_registered_matches(found, "s", 10, Path("/ckpt"))
    with pytest.raises(ValueError, match="with 100 classes"):
        check_registered_matches(found, "xxs", 100, Path("/ckpt"))


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
