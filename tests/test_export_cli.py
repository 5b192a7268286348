"""`python -m autovit_ray.export`: a searched arch from a JSON file or an MLflow run id,
extracted from the trained digits supernet, written as standalone models that match the supernet."""

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch

import autovit_ray.models  # noqa: F401 - registers "autovit" in timm
from autovit_ray.checkpoint import find_checkpoint, load_supernet
from autovit_ray.data import build_loader
from autovit_ray.evaluation import calibrate
from autovit_ray.export import example_input
from autovit_ray.export_cli import main
from autovit_ray.space import Arch, load_space


def _reference_logits(checkpoint, arch: Arch, x: torch.Tensor) -> np.ndarray:
    """The supernet's active path after recalibrating BN on one calibration batch (done here by
    hand, not through the CLI's helper)."""
    supernet, _, config = load_supernet(checkpoint)
    supernet = copy.deepcopy(supernet)
    supernet.set_active(arch)
    calibrate(supernet, build_loader(config.data, "calib", resolution=arch.resolution), num_batches=1)
    with torch.no_grad():
        return supernet.eval()(x).numpy()


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return float(np.abs(a - b).max()) <= 1e-4 * float(np.abs(b).max())


def test_export_from_arch_json_file_matches_supernet(trained_digits_experiment, tmp_path, capsys):
    checkpoint = find_checkpoint(trained_digits_experiment.dir, "xxs")
    arch = load_space("xxs", input_profile="digits").sample(random.Random(3))
    arch_file = tmp_path / "in.arch.json"
    arch_file.write_text(arch.to_json())
    out = tmp_path / "out"
    argv = ["--arch", str(arch_file), "--checkpoint", str(trained_digits_experiment.dir), "--supernet", "xxs",
            "--format", "torchscript,onnx", "--out", str(out), "--name", "m", "--calib-batches", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for label in ("torchscript", "onnx", "timm .pth"):
        assert any(line.strip().startswith(label) and "max abs error" in line and line.endswith("ok")
                   for line in printed.splitlines()), printed
    assert str(out / "m.ts.pt") in printed and str(out / "m.onnx") in printed

    assert Arch.from_json((out / "m.arch.json").read_text()) == arch
    x = example_input(arch.resolution, batch=2, seed=7)
    expected = _reference_logits(checkpoint, arch, x)
    model = timm.create_model("autovit", arch=str(out / "m.arch.json"), num_classes=10,
                              checkpoint_path=str(out / "m.pth")).eval()
    with torch.no_grad():
        assert _close(model(x).numpy(), expected)
        scripted = torch.jit.load(str(out / "m.ts.pt"))
        assert _close(scripted(x[:1]).numpy(), expected[:1])
    import onnxruntime as ort

    onnx_out = ort.InferenceSession(str(out / "m.onnx")).run(None, {"image": x.numpy()})[0]
    assert _close(onnx_out, expected)


def test_export_from_mlflow_run_ids(finished_digits_search, tmp_path):
    from mlflow.tracking import MlflowClient

    search = finished_digits_search
    client = MlflowClient(search.mlflow_uri)
    experiment = client.get_experiment_by_name("autovit-search")
    parent = client.search_runs([experiment.experiment_id], f"tags.search_name = '{search.name}' and tags.role = 'search'")[0]
    child = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")[0]
    base = ["--checkpoint", str(search.checkpoint), "--mlflow-uri", search.mlflow_uri, "--calib-batches", "1"]

    # A candidate (child) run: its params are the arch.
    assert main(["--arch", child.info.run_id, *base, "--format", "torchscript", "--out", str(tmp_path / "c"),
                 "--name", "child"]) == 0
    assert Arch.from_json((tmp_path / "c" / "child.arch.json").read_text()) == Arch.from_params(child.data.params)
    assert (tmp_path / "c" / "child.ts.pt").is_file()

    # The parent run: its best arch, with the same weights as the search's own export of it.
    assert main(["--arch", parent.info.run_id, *base, "--format", "", "--out", str(tmp_path / "p"),
                 "--name", "best"]) == 0
    best = search.results["best"][0]
    assert json.loads((tmp_path / "p" / "best.arch.json").read_text()) == best["arch"]
    ours = torch.load(tmp_path / "p" / "best.pth", weights_only=True)
    theirs = torch.load(best["weights"], weights_only=True)
    assert ours.keys() == theirs.keys() and all(torch.allclose(ours[k].float(), theirs[k].float(), atol=1e-6)
                                                for k in ours)


def test_export_from_a_registered_model(finished_digits_search, trained_digits_experiment, tmp_path, capsys):
    """models:/<name>@champion: the search's best model; --checkpoint defaults to the one it names."""
    search = finished_digits_search
    best = search.results["best"][0]
    assert main(["--arch", "models:/autovit-digits-test-xxs@champion", "--mlflow-uri", search.mlflow_uri,
                 "--format", "onnx", "--calib-batches", "1", "--out", str(tmp_path), "--name", "champ"]) == 0
    assert json.loads((tmp_path / "champ.arch.json").read_text()) == best["arch"]
    assert (tmp_path / "champ.onnx").is_file()
    # the same model by version number, against a checkpoint of another supernet: one clear error
    other = str(find_checkpoint(trained_digits_experiment.dir, "s"))
    assert main(["--arch", "models:/autovit-digits-test-xxs/1", "--mlflow-uri", search.mlflow_uri,
                 "--checkpoint", other, "--format", "", "--out", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err
    assert "is a model of supernet 'xxs' with 10 classes" in err and "is supernet 's'" in err
    assert main(["--arch", "models:/autovit-digits-test-xxs@nobody", "--mlflow-uri", search.mlflow_uri,
                 "--out", str(tmp_path / "never")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_bad_export_inputs(trained_digits_experiment, finished_digits_search, tmp_path, capsys):
    exp = str(trained_digits_experiment.dir)
    out = tmp_path / "never"
    good = load_space("xxs", input_profile="digits").smallest()

    def fails(arch: str, *extra: str, checkpoint: str = exp) -> str:
        assert main(["--arch", arch, "--checkpoint", checkpoint, "--supernet", "xxs", "--out", str(out),
                     "--format", "torchscript", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
        return err

    assert "malformed Arch JSON" in fails("{not json")
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"supernet": "xxs", "resolution": 8}))
    assert "malformed Arch" in fails(str(broken))
    foreign = load_space("xs", input_profile="digits").smallest()
    assert "does not belong to the checkpoint's space" in fails(foreign.to_json())
    other_profile = load_space("xxs", input_profile="imagenet").smallest()  # 128 px: not a digits resolution
    assert "resolution" in fails(other_profile.to_json())
    assert "unknown MLflow run id" in fails("0" * 32, "--mlflow-uri", finished_digits_search.mlflow_uri)
    assert "neither inline JSON" in fails(str(tmp_path / "missing.json"))
    assert "unknown export format" in fails(good.to_json(), "--format", "torchscript,tflite")
    assert "no checkpoint of supernet 'xxs'" in fails(good.to_json(), checkpoint=str(tmp_path))
    assert "--calib-size must be >= 1, got 0" in fails(good.to_json(), "--calib-size", "0")
    assert not out.exists()


def test_export_recalibrates_on_as_many_images_as_asked(trained_digits_experiment, tmp_path):
    """--calib-size: the training images a search's --calib-size scored with, not the checkpoint's 32."""
    arch = load_space("xxs", input_profile="digits").smallest()
    base = ["--arch", arch.to_json(), "--checkpoint", str(trained_digits_experiment.dir), "--supernet", "xxs",
            "--format", "", "--name", "m", "--calib-batches", "2"]
    assert main([*base, "--out", str(tmp_path / "default")]) == 0
    assert main([*base, "--out", str(tmp_path / "more"), "--calib-size", "64"]) == 0
    default, more = (torch.load(tmp_path / d / "m.pth", weights_only=True) for d in ("default", "more"))
    means = [k for k in default if k.endswith("running_mean")]
    assert means and any(not torch.equal(default[k], more[k]) for k in means)


def test_python_dash_m_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "autovit_ray.export", "--arch", "{}", "--checkpoint",
                           str(tmp_path), "--out", str(tmp_path), "--format", "tflite"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: unknown export format"), proc.stderr


@pytest.mark.parametrize("spec", ["{}", '{"supernet": "xxs"}'])
def test_resolve_arch_never_asks_mlflow_for_json(spec):
    from autovit_ray.arch_source import resolve_arch

    def no_mlflow() -> str:
        raise AssertionError("JSON input must not look up MLflow")

    with pytest.raises(ValueError, match="malformed Arch"):
        resolve_arch(spec, no_mlflow)


def test_resolve_arch_from_a_search_directory_or_its_results(finished_digits_search, tmp_path):
    from autovit_ray.arch_source import resolve_arch

    def no_mlflow() -> str:
        raise AssertionError("a search directory must not look up MLflow")

    search_dir = finished_digits_search.dir / "search" / finished_digits_search.name
    best = Arch.from_dict(finished_digits_search.results["best"][0]["arch"])
    assert resolve_arch(str(search_dir), no_mlflow) == best
    assert resolve_arch(str(search_dir / "results.json"), no_mlflow) == best
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "results.json").write_text(json.dumps({"best": [], "evaluations": 0}))
    with pytest.raises(ValueError, match="not a finished search's results.json"):
        resolve_arch(str(unfinished), no_mlflow)


def test_check_outputs_flags_a_mismatch(capsys):
    from autovit_ray.export_cli import ExportCheckError, check_outputs

    reference = np.array([[1.0, -2.0, 4.0]])
    assert check_outputs({"same": lambda: reference + 1e-6}, reference)["same"]["ok"]
    with pytest.raises(ExportCheckError, match="onnx"):
        check_outputs({"torchscript": lambda: reference, "onnx": lambda: reference * 1.01}, reference)
    assert "MISMATCH" in capsys.readouterr().out
