"""Latency profiling: backends, the Parquet LUT, the predictor, validation, the CLI.

A deterministic fake backend (latency = a known additive function of the module's leaves) proves
the prediction exact and additive; the real backends are exercised on small modules; one small
real build + validate runs on XXS at 128 px with few repeats.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import sys
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from autovit_ray import profile
from autovit_ray.latency import (
    BuildConfig,
    CoreMLBackend,
    LatencyBackend,
    LatencyTable,
    OnnxRuntimeBackend,
    PreparedModel,
    RemoteBackend,
    arch_module_keys,
    build_table,
    enumerate_module_keys,
    get_backend,
    kendall_tau,
    measure,
    validate_table,
)
from autovit_ray.latency.backends import parse_remote_output
from autovit_ray.latency.lut import ModuleRow
from autovit_ray.latency.measure import QuietGate, describe_quiet, measure_models, round_factors, summarize
from autovit_ray.latency.modules import constant_key, layer_key
from autovit_ray.nn import AutoViTNet, Supernet
from autovit_ray.space import load_space

RES = 128
WHOLE_NETWORK_MS = 0.75  # the fake's per-network constant (a framework's call overhead)


# --------------------------------------------------------------------------------------------
# A deterministic fake backend
# --------------------------------------------------------------------------------------------


def fake_latency(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """Sum over leaf modules of (1e-4 ms per parameter + 1e-6 ms per input element), plus a
    constant for a whole network: additive over any split of the network into modules."""
    total = [0.0]

    def leaf_cost(module: nn.Module, args: tuple, _out: Any) -> None:
        params = sum(p.numel() for p in module.parameters(recurse=False))
        total[0] += 1e-4 * params + 1e-6 * args[0].numel()

    # shapes are all the cost needs: a copy on the meta device runs no arithmetic (seconds at 192 px)
    model = copy.deepcopy(model).to("meta").eval()
    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(leaf_cost) for m in leaves]
    try:
        with torch.inference_mode():
            model(torch.zeros(*input_shape, device="meta"))
    finally:
        for h in hooks:
            h.remove()
    return total[0] + (WHOLE_NETWORK_MS if isinstance(model, AutoViTNet) else 0.0)


class _FakePrepared(PreparedModel):
    def __init__(self, value: float) -> None:
        self.value = value

    def time(self, repeats: int, inner: int = 1) -> list[float]:
        return [self.value] * repeats


class FakeBackend(LatencyBackend):
    name = "fake"

    def settings(self) -> dict[str, Any]:
        return {"kind": "deterministic"}

    def prepare(self, model: Any, input_shape: tuple[int, ...]) -> PreparedModel:
        return _FakePrepared(fake_latency(model, input_shape))


@pytest.fixture(scope="module")
def space():
    return load_space("xxs")


@pytest.fixture(scope="module")
def fake_table(space):
    config = BuildConfig(rounds=1, repeats=1, references=8, folds=3, quiet_cpus=None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # ~200 small forward passes: a second thread only waits on a busy 2-core box
    try:
        return build_table(space, FakeBackend(), [RES], num_classes=10, config=config, log=lambda _m: None)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def supernet(space):
    torch.manual_seed(0)
    return Supernet(space, 10).eval()


def _archs(space, n: int, seed: int) -> list:
    rng = random.Random(seed)
    return [dataclasses.replace(space.sample(rng), resolution=RES) for _ in range(n)]


# --------------------------------------------------------------------------------------------
# Modules and the predictor
# --------------------------------------------------------------------------------------------


def test_enumeration_covers_every_sampled_arch(space):
    keys = set(enumerate_module_keys(space, RES, 10))
    rng = random.Random(3)
    for _ in range(300):
        arch = dataclasses.replace(space.sample(rng), resolution=RES)
        assert set(arch_module_keys(arch, space, 10)) <= keys
    assert {k.split("/")[0] for k in keys} == {"stem", "mbconv", "frame", "layer", "head"}


def test_fake_backend_prediction_is_exact_for_both_methods(space, fake_table, supernet):
    assert set(fake_table.methods) == {"isolated", "in_context"}
    for arch in _archs(space, 6, seed=11):
        truth = fake_latency(supernet.get_active_subnet(arch), (1, 3, RES, RES))
        for method in fake_table.methods:
            assert fake_table.predict_latency(arch, method) == pytest.approx(truth, rel=1e-9)
    assert fake_table.latency(constant_key(RES), "isolated") == pytest.approx(WHOLE_NETWORK_MS, rel=1e-9)


def test_prediction_is_additive_in_depth(space, fake_table):
    arch = space.smallest()
    arch = dataclasses.replace(arch, resolution=RES)
    deeper = dataclasses.replace(arch, transformer_depths=(arch.transformer_depths[0] + 2,) + arch.transformer_depths[1:])
    size = space.feature_sizes(RES)[4]
    layer = fake_table.latency(layer_key(RES, size, arch.transformer_widths[0], arch.transformer_heads[0],
                                         arch.transformer_mlp_ratios[0]))
    assert fake_table.predict_latency(deeper) - fake_table.predict_latency(arch) == pytest.approx(2 * layer, rel=1e-9)
    parts = fake_table.predict_breakdown(arch)
    assert sum(parts.values()) == pytest.approx(fake_table.predict_latency(arch), rel=1e-12)


def test_validation_on_the_fake_backend_is_exact(space, fake_table):
    """The deterministic backend: the table predicts every fresh subnet exactly (MAPE 0, every point
    within 5 %, tau 1), and the retest equals the first pass. Real timing and the predictor's speed
    are benchmarks (bench/latency_lut.py), not unit tests."""
    report = validate_table(fake_table, FakeBackend(), samples=12, seed=3, rounds=2, resolutions=[RES],
                            quiet_cpus=None, log=lambda _m: None)
    predictor = report.predictor
    assert predictor["mape"] == pytest.approx(0.0, abs=1e-9) and predictor["within_5"] == 100.0
    assert predictor["kendall_tau"] == pytest.approx(1.0)
    assert report.retest["mape"] == pytest.approx(0.0, abs=1e-9)


# --------------------------------------------------------------------------------------------
# Parquet round trip and bad input
# --------------------------------------------------------------------------------------------


def test_parquet_round_trip(tmp_path, space, fake_table):
    path = fake_table.save(tmp_path / "lut.parquet")
    loaded = LatencyTable.load(path, space=space, backend="fake", resolutions=[RES])
    assert loaded.method == fake_table.method and loaded.values == fake_table.values
    assert loaded.space_fingerprint == space.fingerprint() and loaded.device_id == fake_table.device_id
    for arch in _archs(space, 5, seed=4):
        assert loaded.predict_latency(arch) == fake_table.predict_latency(arch)
    arrow = pq.read_table(path)
    assert {"supernet", "space_fingerprint", "backend", "device_id", "module_key", "input_shape", "latency_ms",
            "median_ms", "samples", "timestamp"} <= set(arrow.column_names)
    meta = json.loads(arrow.schema.metadata[b"autovit_latency"])
    assert meta["resolutions"] == [RES] and meta["backend"] == "fake" and meta["references"]
    assert LatencyTable.load(path).space.fingerprint() == space.fingerprint()  # usable without the YAML
    fake_table.save(path)  # overwrite: atomic, no temporary files left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lut.parquet"]


def test_a_table_of_a_patch_profile_loads_without_its_yaml(tmp_path):
    """The cifar10-p1 profile sets per-stage patch sizes; its table's space record must keep them (it
    once lost them, and `profile validate` refused every such table as corrupt)."""
    p1 = load_space("xxs", input_profile="cifar10-p1")
    # Made-up module latencies (building a table takes a minute even on the fake backend).
    keys = [constant_key(32), *enumerate_module_keys(p1, 32, 10)]
    rows = [ModuleRow("isolated", key, 0.01 * (i + 1)) for i, key in enumerate(keys)]
    table = LatencyTable(p1, "fake", rows, {"num_classes": 10, "device_id": "test"})
    path = table.save(tmp_path / "p1.parquet")
    loaded = LatencyTable.load(path)
    assert loaded.space.fingerprint() == p1.fingerprint() and loaded.space.input_profile == p1.input_profile
    arch = dataclasses.replace(p1.largest(), resolution=32)
    assert loaded.predict_latency(arch) == table.predict_latency(arch)


def test_load_refuses_mismatches(tmp_path, space, fake_table):
    path = fake_table.save(tmp_path / "lut.parquet")
    with pytest.raises(ValueError, match="supernet 'xxs', not 'xs'"):
        LatencyTable.load(path, space=load_space("xs"))
    with pytest.raises(ValueError, match="fingerprint"):
        LatencyTable.load(path, space=load_space("xxs", input_profile="cifar10"))
    with pytest.raises(ValueError, match="backend 'fake', not 'torch-cpu'"):
        LatencyTable.load(path, backend="torch-cpu")
    with pytest.raises(ValueError, match=r"resolutions \[128\], not \[256\]"):
        LatencyTable.load(path, resolutions=[256])


def test_corrupt_and_foreign_files_are_refused(tmp_path, fake_table):
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ValueError, match="not a readable Parquet"):
        LatencyTable.load(garbage)
    good = fake_table.save(tmp_path / "lut.parquet")
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[:-200])
    with pytest.raises(ValueError, match="not a readable Parquet"):
        LatencyTable.load(truncated)
    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), foreign)
    with pytest.raises(ValueError, match="not an autovit latency table"):
        LatencyTable.load(foreign)
    with pytest.raises(ValueError, match="does not exist"):
        LatencyTable.load(tmp_path / "missing.parquet")


def test_missing_modules_and_foreign_archs(space, fake_table):
    arch = dataclasses.replace(space.smallest(), resolution=256)
    with pytest.raises(ValueError, match="resolution 256 is not in this latency table"):
        fake_table.predict_latency(arch)
    with pytest.raises(ValueError, match="supernet 'xs'"):
        fake_table.predict_latency(load_space("xs").smallest())
    broken = LatencyTable(space, "fake", fake_table.rows, fake_table.metadata)
    arch = dataclasses.replace(space.smallest(), resolution=RES)
    missing = arch_module_keys(arch, space, 10)[3]
    for values in broken.values.values():
        del values[missing]
    with pytest.raises(ValueError, match=f"module '{missing}' is missing"):
        broken.predict_latency(arch)


# --------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------


def test_unknown_backend_and_bad_settings():
    with pytest.raises(ValueError, match="unknown latency backend 'tpu'"):
        get_backend("tpu")
    with pytest.raises(ValueError, match="needs threads=1"):
        get_backend("torch-cpu", threads=2, clock="thread_cpu")
    with pytest.raises(ValueError, match="unknown clock"):
        get_backend("onnxruntime", clock="sundial")
    with pytest.raises(ValueError, match="bad settings"):
        get_backend("torch-cpu", color="red")


def _small_module(supernet, space) -> tuple[nn.Module, tuple[int, ...]]:
    net = supernet.get_active_subnet(dataclasses.replace(space.smallest(), resolution=RES))
    return net.stages[5].block.layers[0], (4, (space.feature_sizes(RES)[6] // 2) ** 2, 80)


@pytest.mark.parametrize("name,clock", [("torch-cpu", "thread_cpu"), ("onnxruntime", "thread_cpu"),
                                        ("torch-cpu", "wall")])
def test_in_process_backends_time_positive_finite(name, clock, supernet, space):
    threads_before = torch.get_num_threads()
    backend = get_backend(name, threads=1, clock=clock)
    module, shape = _small_module(supernet, space)
    samples = backend.measure(module, shape, repeats=5, inner=3)
    assert len(samples) == 5 and all(np.isfinite(s) and s > 0 for s in samples)
    fp = backend.fingerprint()
    assert fp["backend"] == backend.name and fp["cpu_model"] and fp["settings"]["threads"] == 1
    assert torch.get_num_threads() == threads_before  # timing leaves the process's setting alone


def test_onnxruntime_times_an_exported_file(tmp_path, supernet, space):
    from autovit_ray.export import export_onnx

    module, shape = _small_module(supernet, space)
    path = export_onnx(module, torch.zeros(*shape), tmp_path / "layer.onnx")
    assert all(s > 0 for s in OnnxRuntimeBackend().measure(path, shape, repeats=3))
    with pytest.raises(ValueError, match="needs a torch module or an existing .onnx"):
        OnnxRuntimeBackend().prepare(tmp_path / "nope.onnx", shape)


def test_remote_backend_runs_a_real_subprocess(supernet, space):
    command = (f"{sys.executable} -m autovit_ray.latency.remote_example {{model}} --shape {{shape}} "
               "--repeats {repeats} --warmup {warmup}")
    backend = RemoteBackend(command, warmup=1)
    module, shape = _small_module(supernet, space)
    samples = backend.measure(module, shape, repeats=4)
    assert len(samples) == 4 and all(np.isfinite(s) and s > 0 for s in samples)
    assert "onnxruntime" in backend.fingerprint()["remote_device"]["runtime"]
    grouped = backend.measure(module, shape, repeats=2, inner=3)  # 6 runs on the device, 2 means back
    assert len(grouped) == 2


def test_remote_backend_errors(supernet, space):
    module, shape = _small_module(supernet, space)
    failing = RemoteBackend(f"{sys.executable} -c 'import sys; sys.exit(3)'")
    with pytest.raises(ValueError, match="exit 3"):
        failing.measure(module, shape, repeats=2)
    chatty = RemoteBackend(f"{sys.executable} -c 'print(42)'")
    with pytest.raises(ValueError, match="latencies_ms"):
        chatty.measure(module, shape, repeats=2)
    with pytest.raises(ValueError, match="command not found"):
        RemoteBackend("/no/such/binary {model}").measure(module, shape, repeats=1)
    with pytest.raises(ValueError, match="needs a command"):
        RemoteBackend("")
    with pytest.raises(ValueError, match="malformed remote command"):
        RemoteBackend("run {modle}")
    assert parse_remote_output('noise\n{"latencies_ms": [1.5, 2]}')[0] == [1.5, 2.0]
    with pytest.raises(ValueError, match="positive finite"):
        parse_remote_output('{"latencies_ms": [-1]}')


@pytest.mark.skipif(sys.platform == "darwin", reason="CoreML timing works on macOS")
def test_coreml_timing_on_linux_is_a_clear_error_but_conversion_works(tmp_path, supernet, space):
    backend = CoreMLBackend(compute_units="CPU_ONLY")
    module, shape = _small_module(supernet, space)
    with pytest.raises(ValueError, match="CoreML timing needs macOS"):
        backend.prepare(module, shape)
    with pytest.raises(ValueError, match="CoreML timing needs macOS"):
        build_table(space, backend, [RES], config=BuildConfig(references=1, quiet_cpus=None), log=lambda _m: None)
    package = backend.convert(module, shape, tmp_path / "layer.mlpackage")
    assert (package / "Manifest.json").is_file()
    with pytest.raises(ValueError, match="unknown CoreML compute units"):
        CoreMLBackend(compute_units="TPU")


# --------------------------------------------------------------------------------------------
# Measurement helpers
# --------------------------------------------------------------------------------------------


def test_round_load_correction_removes_a_common_slowdown():
    rng = np.random.default_rng(0)
    true = np.linspace(1, 10, 12)
    load = np.array([1.0, 1.5, 1.0, 0.9, 2.0, 1.0])
    samples = true[:, None, None] * load[None, :, None] * rng.normal(1, 0.005, (12, 6, 3))
    factors = round_factors(samples)
    assert np.allclose(factors / factors[0], load / load[0], rtol=0.02)
    medians = np.array([s.median_ms for s in summarize(samples)])
    assert np.allclose(medians / true, np.median(medians / true), rtol=0.02)


def test_quiet_gate_keeps_quiet_rounds_or_the_quietest_half():
    gate = QuietGate(max_other_cpus=0.3, max_wait_s=0)
    gate.round_loads = [0.1, 0.9, 0.2, 0.0, 1.0, 0.25]
    assert gate.quiet_rounds(6).tolist() == [True, False, True, True, False, True]
    gate.round_loads = [0.9, 1.0, 0.5, 0.8]  # a long neighbouring job: keep the quieter half
    assert gate.quiet_rounds(4).tolist() == [False, False, True, True]
    assert gate.report(4)["quiet_rounds"] == 2
    assert 0.0 <= gate.other_cpus(window_s=0.05) <= 64


class _ScriptedGate(QuietGate):
    """A gate on a fake clock: each 1 s look at the load reads the next scripted value."""

    def __init__(self, loads: list[float], monkeypatch: pytest.MonkeyPatch, **kwargs: float) -> None:
        super().__init__(**kwargs)
        self.loads, self.now = iter(loads), 0.0
        monkeypatch.setattr(measure.time, "monotonic", lambda: self.now)

    def other_cpus(self, window_s: float = 1.0) -> float:
        self.now += window_s
        return next(self.loads)


def test_quiet_gate_waits_long_once_then_briefly_while_the_machine_stays_busy(monkeypatch):
    """A wait that runs out (a load outlasting it) makes the next rounds wait at most `busy_wait_s`,
    until a round begins quiet: then the full wait again."""
    busy, quiet = 1.0, 0.0
    gate = _ScriptedGate([busy] * 10 + [busy] * 3 + [busy] * 2 + [quiet] + [busy] * 10, monkeypatch,
                         max_other_cpus=0.3, max_wait_s=10, busy_wait_s=3)
    gate.before_round()  # 10 busy looks: the full wait runs out
    assert (gate.now, gate.timeouts, gate.busy) == (10, 1, True)
    gate.before_round()  # a short wait, runs out too
    assert (gate.now, gate.timeouts) == (13, 2)
    gate.before_round()  # quiet on the third look: busy no more
    assert (gate.now, gate.timeouts, gate.busy) == (16, 2, False)
    gate.before_round()  # the full wait again
    assert (gate.now, gate.timeouts, gate.busy) == (26, 3, True)
    assert gate.waited_s == 26 and gate.report(0)["timeouts"] == 3
    assert "3 waits ran out, the machine stayed busy" in describe_quiet({**gate.report(0), "quiet_rounds": 0})

def test_measure_models_closes_every_prepared_model_also_when_one_fails():
    """Each model is timed in every round (its samples are its own); every prepared model is closed
    afterwards, and when preparing one fails, the ones prepared before it are closed too."""
    closed: list[float] = []
    timed: list[float] = []

    class Closing(_FakePrepared):
        def time(self, repeats: int, inner: int = 1) -> list[float]:
            timed.append(self.value)
            return [self.value] * repeats

        def close(self) -> None:
            closed.append(self.value)

    class Backend(FakeBackend):
        def prepare(self, model: Any, input_shape: tuple[int, ...]) -> PreparedModel:
            if model == "broken":
                raise RuntimeError("cannot prepare")
            return Closing(float(model))

    stats = measure_models(Backend(), [("2.0", (1,)), ("1.0", (1,))], rounds=3, repeats=2)
    assert [s.median_ms for s in stats] == [2.0, 1.0] and [s.samples for s in stats] == [6, 6]
    assert sorted(closed) == [1.0, 2.0] and sorted(timed) == [1.0] * 4 + [2.0] * 4  # a warm-up round + 3
    closed.clear()
    with pytest.raises(RuntimeError, match="cannot prepare"):
        measure_models(Backend(), [("3.0", (1,)), ("broken", (1,)), ("4.0", (1,))], rounds=1, repeats=1)
    assert closed == [3.0]


def test_kendall_tau():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau([1, 2, 3, 4, 5], [1, 3, 2, 5, 4]) == pytest.approx(0.6)
    assert kendall_tau([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / np.sqrt(5 * 6))  # tau-b with ties


# --------------------------------------------------------------------------------------------
# The real thing, small: CLI build + validate + breakdown on XXS at 128 px
# --------------------------------------------------------------------------------------------


def test_cli_build_validate_breakdown_on_xxs(tmp_path, capsys):
    lut = tmp_path / "xxs.parquet"
    # Two of the three ImageNet-profile resolutions, few references and rounds: ~30 s on 2 cores.
    assert profile.main(["build", "--supernet", "xxs", "--backend", "torch-cpu", "--resolution", "128,192",
                         "--out", str(lut), "--rounds", "2", "--repeats", "1", "--references", "6",
                         "--num-classes", "10", "--quiet-wait", "0"]) == 0
    table = LatencyTable.load(lut, space=load_space("xxs"), backend="torch-cpu", resolutions=[128, 192])
    assert table.backend_settings["threads"] == 1 and table.backend_settings["clock"] == "thread_cpu"
    out = tmp_path / "report"
    assert profile.main(["validate", "--lut", str(lut), "--samples", "8", "--spread", "--seed", "1",
                         "--rounds", "3", "--repeats", "1", "--out", str(out), "--quiet-wait", "0"]) == 0
    report = json.loads((out / "validation.json").read_text())
    assert report["samples"] == 8
    # real timing: the report's structure here; its quality is a benchmark (bench/latency_lut.py)
    assert -1.0 <= report["predictor"]["kendall_tau"] <= 1.0 and report["predictor"]["mape"] >= 0
    assert {"mape", "within_5", "within_10", "kendall_tau"} <= set(report["retest"])
    assert (out / "validation.png").stat().st_size > 1000
    reference_hashes = {r["arch_hash"] for r in table.metadata["references"]}
    assert not reference_hashes & {json.loads(r["arch"]) and _hash(r["arch"]) for r in report["rows"]}
    assert "Kendall tau" in capsys.readouterr().out

    png = tmp_path / "breakdown.png"
    assert profile.main(["breakdown", "--supernet", "xxs", "--resolution", str(RES), "--iterations", "2",
                         "--out", str(png)]) == 0
    rows = json.loads(png.with_suffix(".json").read_text())
    assert [r["model"].split(" ")[1] for r in rows] == ["smallest", "largest"]
    for row in rows:
        assert all(row[c] > 0 for c in ("attention", "mlp", "conv", "norm", "total"))
        assert row["total"] == pytest.approx(sum(row[c] for c in ("attention", "mlp", "conv", "norm", "other")),
                                             rel=1e-6)
    assert png.stat().st_size > 1000


def test_cli_reports_bad_input_as_one_line(tmp_path, capsys):
    assert profile.main(["build", "--supernet", "xxs", "--backend", "tpu", "--out", str(tmp_path / "x")]) == 2
    assert "unknown latency backend 'tpu'" in capsys.readouterr().err
    assert profile.main(["validate", "--lut", str(tmp_path / "none.parquet")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert profile.main(["build", "--supernet", "xxs", "--resolution", "100", "--out", str(tmp_path / "x")]) == 2
    assert "resolutions [100] are not in space" in capsys.readouterr().err


def _hash(arch_json: str) -> str:
    from autovit_ray.space import Arch

    return Arch.from_json(arch_json).arch_hash


def test_merge_tables_of_separate_resolutions(fake_table):
    """Tables built one resolution at a time merge into one that predicts as each part did; tables
    that overlap, or come from another backend, are refused."""
    from autovit_ray.latency import merge_tables

    space = load_space("xxs", input_profile="digits")  # one 8 px resolution: a second table, cheaply
    config = BuildConfig(rounds=1, repeats=1, references=4, folds=2, quiet_cpus=None)
    small = build_table(space, FakeBackend(), [8], num_classes=10, config=config, log=lambda _m: None)
    with pytest.raises(ValueError, match="different spaces or backends"):
        merge_tables([fake_table, small])  # the imagenet and digits profiles are other spaces
    at_128 = fake_table
    imagenet = load_space("xxs")
    at_192 = build_table(imagenet, FakeBackend(), [192], num_classes=10, config=config, log=lambda _m: None)
    merged = merge_tables([at_128, at_192])
    assert sorted(merged.resolutions) == [128, 192]
    archs = [dataclasses.replace(a, resolution=r) for a, r in zip(_archs(imagenet, 6, seed=5), [128, 192] * 3)]
    for arch in archs:
        part = at_128 if arch.resolution == 128 else at_192
        assert merged.predict_latency(arch, part.method) == pytest.approx(part.predict_latency(arch, part.method),
                                                                          rel=1e-12)
    assert len(merged.metadata["references"]) == len(at_128.metadata["references"]) + len(at_192.metadata["references"])
    with pytest.raises(ValueError, match="overlap at resolutions \\[128\\]"):
        merge_tables([at_128, merged])
    with pytest.raises(ValueError, match="at least one table"):
        merge_tables([])
