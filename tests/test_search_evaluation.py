"""How the search evaluates, without Ray: the evaluation cache (`autovit_ray.search.cache`: keys,
persistence, what makes an entry foreign) and selection on a fixed half of the validation split. The
actor pool's use of the cache is in test_search_real.py."""

from __future__ import annotations

import pickle
import random

import pytest
import torch
from conftest import TINY_TRAIN_SETTINGS

from autovit_ray.checkpoint import read_record, save_checkpoint
from autovit_ray.search.cache import EvalCache, file_digest
from autovit_ray.search.driver import evaluation_context, evaluation_data
from autovit_ray.search.evaluate import EvalSettings
from autovit_ray.space import load_space


def _archs(n: int):
    space = load_space("xxs", input_profile="digits")
    rng = random.Random(0)
    return [space.sample(rng) for _ in range(n)]


def test_entries_persist_per_context_and_split(tmp_path) -> None:
    path = tmp_path / "cache.sqlite"
    a, b = _archs(2)
    cache = EvalCache(path, {"checkpoint": "c1", "settings": {"max_batches": 2}})
    assert cache.get(a, "val") is None and len(cache) == 0
    cache.put(a, "val", {"val_top1": 51.5, "arch_hash": a.arch_hash, "cached": True})
    assert cache.get(a, "val") == {"val_top1": 51.5, "arch_hash": a.arch_hash, "cached": True}
    assert cache.get(a, "test") is None and cache.get(b, "val") is None  # another split, another arch
    # a new process (here: a new object, and a pickled copy as a Tune trial gets it) sees the entry
    assert EvalCache(path, {"settings": {"max_batches": 2}, "checkpoint": "c1"}).get(a, "val")["val_top1"] == 51.5
    assert pickle.loads(pickle.dumps(cache)).get(a, "val")["val_top1"] == 51.5
    # another context never reuses it, though it shares the file
    for other in ({"checkpoint": "c2", "settings": {"max_batches": 2}}, {"checkpoint": "c1", "settings": {}}):
        foreign = EvalCache(path, other)
        assert foreign.get(a, "val") is None and len(foreign) == 0
    assert len(cache) == 1


def test_a_file_that_is_not_a_cache_is_refused(tmp_path) -> None:
    path = tmp_path / "cache.sqlite"
    path.write_bytes(b"not a database, " * 100)
    with pytest.raises(ValueError, match="not a readable SQLite file .* delete it or pass another --eval-cache"):
        EvalCache(path, {"checkpoint": "c1"})


def test_context_changes_with_the_checkpoint_data_and_settings(tmp_path, one_thread) -> None:
    from autovit_ray.training.config import load_config
    from autovit_ray.training.loop import SupernetTrainer

    cfg = load_config("digits", list(TINY_TRAIN_SETTINGS) + ["supernets=xxs"])
    trainer = SupernetTrainer(cfg, load_space("xxs", input_profile="digits"), log=lambda _: None)
    first = save_checkpoint(tmp_path / "epoch_0001", trainer.state_dict())
    settings = EvalSettings(max_batches=2, calib_batches=1)
    context = evaluation_context(first, evaluation_data(read_record(first), {}), settings)
    assert context["checkpoint"] == file_digest(first / "state.pt") and context["dataset"] == "digits"
    assert context == evaluation_context(first, evaluation_data(read_record(first), {}), settings)  # stable
    # one more optimizer step: other weights, another context
    x, y = next(iter(trainer.loaders.train))
    trainer.train_step(x, y, [trainer.space.largest()])
    second = save_checkpoint(tmp_path / "epoch_0002", trainer.state_dict())
    assert evaluation_context(second, evaluation_data(read_record(second), {}), settings)["checkpoint"] != context["checkpoint"]
    assert evaluation_context(first, evaluation_data(read_record(first), {}), EvalSettings(max_batches=3)) != context
    assert evaluation_context(first, evaluation_data(read_record(first), {"split_seed": 1}), settings)["data_digest"] != \
        context["data_digest"]


def test_selection_on_a_fixed_half_of_the_validation_split(one_thread) -> None:
    from autovit_ray.data import DataConfig, build_loader, make_splits
    from autovit_ray.nn import Supernet
    from autovit_ray.search.evaluate import SubnetEvaluator

    data = DataConfig(dataset="digits", batch_size=64)
    val = make_splits(data).val
    halves = [torch.cat([y for _, y in build_loader(data, "val", part=(k, 2))]) for k in (0, 1)]
    assert len(halves[0]) + len(halves[1]) == len(val) and len(halves[0]) - len(halves[1]) in (0, 1)
    with pytest.raises(ValueError, match=r"part \(2, 2\) is invalid"):
        build_loader(data, "val", part=(2, 2))
    space = load_space("xxs", input_profile="digits")
    supernet = Supernet(space, 10)
    arch = space.smallest()
    evaluator = SubnetEvaluator(supernet, space, data, EvalSettings(val_half=1, calib_batches=1))
    selected, other = evaluator.evaluate(arch), evaluator.evaluate_split(arch, "val_other")
    assert selected["images"] == len(halves[1]) and other["images"] == len(halves[0])
    assert "val_other_top1" in other and other["split"] == "val_other"
    whole = SubnetEvaluator(supernet, space, data, EvalSettings(calib_batches=1))
    assert whole.evaluate(arch)["images"] == len(val)
    with pytest.raises(ValueError, match="'val_other' needs EvalSettings.val_half"):
        whole.evaluate_split(arch, "val_other")
    with pytest.raises(ValueError, match="val_half must be 0, 1 or None"):
        EvalSettings(val_half=2)


def test_derived_timeouts_scale_with_the_batches_of_each_split():
    from autovit_ray.search.actors import TIMEOUT_FACTOR, TIMEOUT_FLOOR_S, derived_timeouts

    timeouts = derived_timeouts(0.5, {"val": 4, "val_other": 22, "test": 100})
    assert timeouts == {"val": TIMEOUT_FLOOR_S, "val_other": TIMEOUT_FACTOR * 0.5 * 22, "test": TIMEOUT_FACTOR * 50.0}
