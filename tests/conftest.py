"""Shared test fixtures."""

from __future__ import annotations

import os
import tempfile

import pytest


def pytest_configure(config) -> None:
    # The decoded-tensor cache of the in-memory data path: one per test session (Ray workers inherit
    # it), never the user's ~/.cache.
    if "AUTOVIT_RAY_DATA_CACHE" not in os.environ:
        config._data_cache = tempfile.TemporaryDirectory(prefix="autovit-ray-data-cache-")
        os.environ["AUTOVIT_RAY_DATA_CACHE"] = config._data_cache.name


INTEGRATION_TIMEOUT_S = 2400  # whole-pipeline and kill tests; unit tests keep pyproject's `timeout`


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if item.get_closest_marker("integration") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(INTEGRATION_TIMEOUT_S))


# The skips CI may have (README, "Tests that skip"): capabilities a CI machine cannot be given. Under
# CI=true any other skip fails, so a missing tool or data folder cannot pass as green.
ALLOWED_CI_SKIPS = ("needs a GPU", "CoreML timing works on macOS", "the real CIFAR-10 npz is not at")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not any(allowed in reason for allowed in ALLOWED_CI_SKIPS):
            report.outcome = "failed"
            report.longrepr = f"skipped under CI=true, which allows only the skips README lists: {reason}"


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    seed = getattr(config.option, "randomly_seed", None)  # -q hides pytest-randomly's header line
    if seed is not None and config.pluginmanager.has_plugin("randomly"):
        terminalreporter.write_line(f"test order: pytest-randomly seed {seed} (repeat with -p randomly "
                                    f"--randomly-seed={seed})")


def pytest_unconfigure(config) -> None:
    if hasattr(config, "_data_cache"):
        config._data_cache.cleanup()


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test session (Ray starts in seconds, not ms).

    `address="local"` always starts a fresh instance, never joins a cluster someone else started
    on this machine. If Ray is already up (another fixture started it), it is reused and left alone."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


# Tiny settings for `python -m autovit_ray.train` on digits: 2 epochs of 2 steps, minimal evaluation,
# one torch thread and half a CPU per worker (three trainers share the session's 2 CPUs), on CPU (a
# cluster the driver only joins cannot answer use_gpu 'auto' without GPUs up).
TINY_TRAIN_SETTINGS = (
    "data.batch_size=16", "data.calib_size=32", "train.epochs=2", "train.max_steps_per_epoch=2",
    "eval.num_random_subnets=1", "eval.max_batches=1", "eval.calib_batches=1",
    "ray.torch_threads=1", "ray.cpus_per_worker=0.5", "ray.use_gpu=false",
)


def tiny_train_argv(output_dir, name: str, supernets: str = "xxs", *extra: str) -> list[str]:
    argv = ["--config", "digits", "--name", name, "--output-dir", str(output_dir), "--supernets", supernets]
    for item in (*TINY_TRAIN_SETTINGS, *extra):
        argv += ["--set", item]
    return argv


@pytest.fixture(scope="session")
def trained_digits_experiment(ray_session, tmp_path_factory):
    """Three tiny digits supernets (xxs, xs, s) trained concurrently through `python -m autovit_ray.train`
    on Ray Train, two data-parallel workers each. Later tests reuse them: `.dir` is the experiment directory (checkpoints in
    `.dir / "checkpoints" / <supernet>`, MLflow in `.dir / "mlflow.db"`); load one with
    `autovit_ray.checkpoint.load_supernet(find_checkpoint(exp.dir, "xxs"))`. Read-only: do not write into it."""
    from types import SimpleNamespace

    from autovit_ray.train import main

    output_dir = tmp_path_factory.mktemp("train")
    # Two data-parallel workers per supernet: the same launch also shows that the ranks draw the same
    # subnets (train.arch_log writes each rank's arch hashes).
    argv = tiny_train_argv(output_dir, "digits-test", "xxs,xs,s", "ray.num_workers=2",
                           "ray.cpus_per_worker=0.33", "train.arch_log=true")
    assert main(argv) == 0, "training the session's digits supernets failed"
    return SimpleNamespace(dir=output_dir / "digits-test", output_dir=output_dir, name="digits-test",
                           argv=argv, supernets=("xxs", "xs", "s"))


@pytest.fixture(scope="session")
def finished_digits_search(trained_digits_experiment, ray_session, tmp_path_factory):
    """A tiny finished search through `python -m autovit_ray.search` on the session's xxs digits
    supernet (coarse-to-fine, 2 generations of 3 under a 1.6 M parameter budget, 2 evaluator actors,
    top 2 exported as TorchScript and ONNX and logged as MLflow Models, the best registered as
    autovit-digits-test-xxs@champion, no LUT). `.dir` holds `mlflow.db` and `search/<name>/results.json`;
    `.mlflow_uri` is its tracking URI; `.results` the parsed results.json. Read-only: do not write
    into it (test_search_real reruns `.argv` to show that a finished search changes nothing)."""
    import json
    from types import SimpleNamespace

    from autovit_ray.checkpoint import find_checkpoint
    from autovit_ray.search.cli import main

    output_dir = tmp_path_factory.mktemp("search")
    checkpoint = find_checkpoint(trained_digits_experiment.dir, "xxs")
    name = "tiny"
    argv = ["--checkpoint", str(checkpoint), "--name", name, "--output-dir", str(output_dir),
            "--params-budget", "1.6M", "--population", "3", "--generations", "2", "--parents", "2",
            "--coarse-samples", "40", "--skeletons", "2", "--evaluators", "2", "--cpus-per-evaluator", "0.3",
            "--eval-batches", "1", "--calib-batches", "1", "--top-k", "2", "--export-formats", "torchscript,onnx"]
    assert main(argv) == 0, "the session's tiny digits search failed"
    results = json.loads((output_dir / "search" / name / "results.json").read_text())
    return SimpleNamespace(dir=output_dir, name=name, checkpoint=checkpoint, argv=argv, results=results,
                           mlflow_uri=f"sqlite:///{output_dir / 'mlflow.db'}")


def writable_copy(search, tmp_path):
    """A copy of `finished_digits_search` that a test may write into (the fixture is shared by the session,
    so a test that logs runs or reruns the search works on its own copy, and the suite passes in any
    order): its output folder copied, and every path of the old folder inside the tracking database
    (artifact locations of experiments, runs, logged models and model versions) rebased onto the copy."""
    import shutil
    import sqlite3
    from types import SimpleNamespace

    dst = tmp_path / "search-copy"
    shutil.copytree(search.dir, dst)
    old, new = str(search.dir), str(dst)
    with sqlite3.connect(dst / "mlflow.db") as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for column in [row[1] for row in db.execute(f"PRAGMA table_info('{table}')") if "CHAR" in row[2].upper()
                           or "TEXT" in row[2].upper()]:
                db.execute(f'UPDATE "{table}" SET "{column}" = REPLACE("{column}", ?, ?) WHERE "{column}" LIKE ?',
                           (old, new, f"%{old}%"))
    argv = [new if a == old else a for a in search.argv]
    return SimpleNamespace(dir=dst, name=search.name, checkpoint=search.checkpoint, argv=argv,
                           results=search.results, mlflow_uri=f"sqlite:///{dst / 'mlflow.db'}")


@pytest.fixture(scope="session")
def registered_digits_model(tmp_path_factory):
    """A fresh sqlite tracking store with four runs; the first holds the pyfunc + ONNX MLflow Models of
    an untrained digits subnet (`autovit_ray.registry.log_searched_model`). No Ray. Tests register
    versions under their own names."""
    import torch
    from mlflow.tracking import MlflowClient

    from autovit_ray.export import export_model
    from autovit_ray.models import create_subnet, save_subnet
    from autovit_ray.plan import count_macs
    from autovit_ray.registry import ModelFacts, log_searched_model
    from autovit_ray.space import load_space

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    space = load_space("xxs", input_profile="digits")
    arch = space.smallest()
    torch.manual_seed(0)
    model = create_subnet(arch, 10, space).eval()
    arch_path, weights = save_subnet(model, arch, root / "exports", "m")
    onnx_path = export_model(model, arch.resolution, root / "exports", "m", ("onnx",))["onnx"]
    client = MlflowClient(uri)
    experiment = client.create_experiment("autovit-search", artifact_location=(root / "mlartifacts").as_uri())
    runs = [client.create_run(experiment).info.run_id for _ in range(4)]
    facts = ModelFacts(arch=arch, input_profile="digits", num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3,
                       params=sum(p.numel() for p in model.parameters()), macs=count_macs(arch, 10, space),
                       val_top1=50.0, test_top1=49.0, checkpoint="/ckpt", space_fingerprint=space.fingerprint(),
                       data_split="digits/split_seed=0/val_size=None", budgets="params<=1.6e+06",
                       lut_latency_ms=1.5, lut_fingerprint="abc", measured_latency_ms=1.7)
    batch = torch.randn(4, 3, arch.resolution, arch.resolution)
    uris = log_searched_model(uri, runs[0], model, facts, space, arch_path, weights, onnx_path, batch)
    return {"uri": uri, "runs": runs, "facts": facts, "model": model, "uris": uris, "root": root, "space": space}


@pytest.fixture
def one_thread():
    """torch on one thread for the test (small tensors: threads only add contention)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_toy_space(directory):
    """The xxs space under the digits input profile with every conv stage of kind `dsconv`
    (tests/dsconv_kind.py), and transformer stages cut down so that training, profiling and searching
    it take seconds: a user's space YAML. Returns its path."""
    import yaml

    from autovit_ray.space import load_space

    raw = load_space("xxs", input_profile="digits").to_yaml_dict()
    raw["name"] = "toy"
    raw["block_kind_modules"] = ["dsconv_kind"]  # any process that loads the YAML imports it
    raw["mbconv_stages"] = [{"kind": "dsconv", "widths": s["widths"], "depths": [1, 2]} for s in raw["mbconv_stages"]]
    raw["transformer_stages"] = [dict(s, depths=[1, 2], heads=[2], mlp_ratios=[2.0])
                                 for s in raw["transformer_stages"][:3]]
    raw["num_transformer_stages"] = [2, 3]
    path = directory / "toy.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def randomised_supernet(name: str, profile: str, seed: int = 0, num_classes: int = 10):
    """A supernet whose weights AND BatchNorm statistics are random: a fresh BN (mean 0, var 1,
    weight 1) would hide a wrong slice of its buffers, or statistics calibration did not change."""
    import torch

    from autovit_ray.nn import Supernet
    from autovit_ray.space import load_space

    torch.manual_seed(seed)
    net = Supernet(load_space(name, input_profile=profile), num_classes)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.2)
        for buffer_name, buffer in net.named_buffers():
            if buffer_name.endswith("running_mean"):
                buffer.normal_(0.0, 0.5)
            elif buffer_name.endswith("running_var"):
                buffer.uniform_(0.5, 2.0)
    return net.eval()
