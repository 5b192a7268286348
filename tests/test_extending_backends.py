"""A latency backend is one class and a registration: docs/extending.md's "A new latency backend" run as
written (a cost-model backend installed with an entry point, then `profile build` and `validate`), and
the registry's rules (one entry per name, clear errors, the built-ins' options as before)."""

from __future__ import annotations

import dataclasses
import json
import random
import sys
from typing import Any

import pytest
from cli_commands import commands, package_argv
from extending_examples import blocks, installed

from autovit_ray import profile
from autovit_ray.extensions import Registry
from autovit_ray.latency import (
    BACKENDS,
    CoreMLBackend,
    LatencyBackend,
    LatencyTable,
    PreparedModel,
    RemoteBackend,
    TorchCPUBackend,
    backend_from_settings,
    get_backend,
    register_backend,
)
from autovit_ray.space import load_space

HEADING = "A new latency backend"


@pytest.fixture
def documented_backend(tmp_path):
    """The section's module and entry point, installed; (entry-point name, module name)."""
    (source,), (toml,) = blocks(HEADING, "python"), blocks(HEADING, "toml")
    with installed(tmp_path / "site", source, toml, BACKENDS) as plugin:
        yield plugin


def test_the_documented_backend_builds_and_validates_a_table(documented_backend, tmp_path, monkeypatch):
    import torch

    from autovit_ray.nn import Supernet

    name, module = documented_backend
    assert name in BACKENDS.names() and module not in sys.modules  # installed, listed, not imported yet
    shown = [package_argv(command) for block in blocks(HEADING, "bash") for command in commands(block)]
    assert [module for module, _ in shown] == ["autovit_ray.profile"] * 2
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small modules: a second thread only waits on a busy machine
    try:
        for _, argv in shown:
            assert profile.main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    assert module in sys.modules  # the first command loaded the entry point

    table = LatencyTable.load(tmp_path / "luts" / "xxs-macs.parquet", backend=name)
    assert table.backend_settings == {"ms_per_mmac": 0.02} and table.resolutions == (8,)
    report = json.loads((tmp_path / "luts" / "xxs-macs_validation" / "validation.json").read_text())
    assert report["samples"] == 6 and report["backend"] == name
    assert report["predictor"]["mape"] == pytest.approx(0.0, abs=1e-6)
    assert report["predictor"]["kendall_tau"] == pytest.approx(1.0)
    # what the table predicts is the cost model's price of the whole subnet
    backend, supernet, rng = get_backend(name, ms_per_mmac=0.02), Supernet(table.space, 10).eval(), random.Random(2)
    for arch in (dataclasses.replace(table.space.sample(rng), resolution=8) for _ in range(3)):
        price = backend.prepare(supernet.get_active_subnet(arch), (1, 3, 8, 8)).time(1)[0]
        assert price > 0 and table.predict_latency(arch) == pytest.approx(price, rel=1e-6)


class _Constant(PreparedModel):
    def time(self, repeats: int, inner: int = 1) -> list[float]:
        return [1.0] * repeats


class OneMillisecond(LatencyBackend):
    name = "one-ms"

    def __init__(self, warmup: int = 0) -> None:
        self.warmup = warmup

    def settings(self) -> dict[str, Any]:
        return {"warmup": self.warmup, "version": "1.0"}

    def prepare(self, model: Any, input_shape: tuple[int, ...]) -> PreparedModel:
        return _Constant()


def test_a_name_is_registered_once_and_errors_say_what_is_there():
    with BACKENDS.registered("one-ms", OneMillisecond):
        assert isinstance(get_backend("one-ms", warmup=2), OneMillisecond)
        assert OneMillisecond.options() == ("warmup",)
        with pytest.raises(ValueError, match="'one-ms' is already registered .*OneMillisecond.*replace=True"):
            register_backend("one-ms")(type("Other", (OneMillisecond,), {}))
        assert register_backend("one-ms")(OneMillisecond) is OneMillisecond  # the same class again: no-op
        replacement = register_backend("one-ms", replace=True)(type("Faster", (OneMillisecond,), {}))
        assert type(get_backend("one-ms")) is replacement
        with pytest.raises(ValueError, match=r"bad settings for backend 'one-ms': .*its options are \['warmup'\]"):
            get_backend("one-ms", threads=2)
        # a table's records (here "version") are not options: rebuilding skips them
        assert backend_from_settings("one-ms", {"warmup": 3, "version": "1.0"}).warmup == 3
    with pytest.raises(ValueError, match=r"unknown latency backend 'one-ms'; allowed: \['torch-cpu', 'onnxruntime', "
                                         r"'coreml', 'remote'"):
        get_backend("one-ms")
    with pytest.raises(ValueError, match="OneMillisecond says name = 'one-ms' but is registered as 'ms'"):
        register_backend("ms")(OneMillisecond)
    with pytest.raises(ValueError, match="must be a LatencyBackend subclass"):
        BACKENDS.register("two-ms", lambda: None)
    assert "two-ms" not in BACKENDS and "ms" not in BACKENDS


def test_a_broken_entry_point_is_one_clear_error(tmp_path):
    registry: Registry[Any] = Registry("latency backend", "autovit_ray.backends")
    toml = '[project.entry-points."autovit_ray.backends"]\nbroken = "broken_backend:Missing"\n'
    with installed(tmp_path / "site", "raise ImportError('needs a driver this machine lacks')\n", toml, registry):
        assert "broken" in registry.names() and "broken" in registry
        with pytest.raises(ValueError, match="latency backend 'broken': loading entry point 'broken_backend:Missing' "
                                             "of group 'autovit_ray.backends' failed: ImportError: needs a driver"):
            registry.get("broken")
    assert "broken" not in registry


def test_the_built_in_backends_take_the_options_they_took():
    """What `profile validate`, `compare` and the pipeline passed each built-in backend before the
    registry (records such as library versions, and CoreML's clock, left out) is what they pass now."""
    assert list(BACKENDS)[:4] == ["torch-cpu", "onnxruntime", "coreml", "remote"]
    torch_cpu = backend_from_settings("torch-cpu", {"threads": 1, "clock": "wall", "warmup": 2, "steady_malloc": False,
                                                    "mkldnn": True})
    assert (torch_cpu.threads, torch_cpu.clock, torch_cpu.warmup, torch_cpu.steady_malloc) == (1, "wall", 2, False)
    coreml = backend_from_settings("coreml", {"compute_units": "CPU_ONLY", "warmup": 5, "clock": "wall",
                                              "coremltools": "8.0", "format": "mlprogram"})
    assert isinstance(coreml, CoreMLBackend) and coreml.compute_units == "CPU_ONLY"
    remote = backend_from_settings("remote", {"command": "run {model}", "export_format": "onnx", "warmup": 5},
                                   warmup=1)
    assert isinstance(remote, RemoteBackend) and (remote.command, remote.warmup) == ("run {model}", 1)
    assert TorchCPUBackend.options() == ("threads", "clock", "warmup", "steady_malloc")


@pytest.mark.parametrize("backend,expected", [
    ("torch-cpu", {"threads": 1}), ("onnxruntime", {"threads": 1}), ("coreml", {"compute_units": "CPU_ONLY"}),
    ("remote", {"command": "run {model}", "export_format": "coreml"})])
def test_the_pipeline_gives_each_backend_its_own_settings(tmp_path, backend, expected):
    from autovit_ray.pipeline import Pipeline, load_pipeline_config

    cfg = load_pipeline_config("demo", [f"output_dir={tmp_path}", f"profile.backend={backend}",
                                        "profile.compute_units=CPU_ONLY", "profile.remote_command=run {model}",
                                        "profile.export_format=coreml"])
    assert Pipeline(cfg, log=lambda _: None).profile_build()[0] == expected


def test_backend_options_in_the_pipeline_config(tmp_path):
    from autovit_ray.pipeline import Pipeline, load_pipeline_config, profile_settings

    base = [f"output_dir={tmp_path}", "profile.backend=torch-cpu"]
    cfg = load_pipeline_config("demo", [*base, "profile.backend_options=[warmup=3, steady_malloc=false, threads=2]"])
    pipeline = Pipeline(cfg, log=lambda _: None)
    assert pipeline.profile_build()[0] == {"threads": 2, "warmup": 3, "steady_malloc": False}  # over the field
    argv = pipeline.profile_argv("xxs", load_space("xxs", input_profile="digits"), 10, tmp_path / "t.parquet")
    assert argv[argv.index("--threads") + 1] == "2" and "warmup=3" in argv and "steady_malloc=False" in argv
    # the fingerprint holds the options only when set: a table profiled before the field existed is reused
    plain = load_pipeline_config("demo", base).profile
    assert "backend_options" not in profile_settings(plain) and "backend_options" in profile_settings(cfg.profile)
    with pytest.raises(ValueError, match=r"'color' is not an option of backend 'torch-cpu'; its options: "
                                         r"\['threads', 'clock', 'warmup', 'steady_malloc'\]"):
        load_pipeline_config("demo", [*base, "profile.backend_options=[color=red]"])  # at load, not after training
    with pytest.raises(ValueError, match="entry 'warmup' is invalid: expected NAME=VALUE"):
        load_pipeline_config("demo", [*base, "profile.backend_options=[warmup]"])


def test_backend_options_on_the_command_line(capsys):
    assert profile.main(["build", "--supernet", "xxs", "--backend", "torch-cpu", "--backend-option", "warmup",
                         "--out", "unused.parquet"]) == 2
    assert ("--backend-option 'warmup' is invalid: expected NAME=VALUE, e.g. threads=2 (the options of 'torch-cpu': "
            "['threads', 'clock', 'warmup', 'steady_malloc'])") in capsys.readouterr().err
    assert profile.main(["build", "--supernet", "xxs", "--backend", "torch-cpu", "--backend-option", "color=red",
                         "--out", "unused.parquet"]) == 2
    assert "bad settings for backend 'torch-cpu'" in capsys.readouterr().err
