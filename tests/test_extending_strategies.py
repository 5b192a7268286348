"""A search strategy is one class, a factory and a registration: docs/extending.md's "A new search
strategy" run as written (hill climbing, installed with an entry point, run by the Tune searcher), and
the registry's rules: one name per concept (the strategy once called "pareto"), the built-ins built as
before, clear errors."""

from __future__ import annotations

import sys
import tempfile
import types
from pathlib import Path

import pytest
from extending_examples import blocks, installed

from autovit_ray.search import (
    FINE_STAGE,
    PLAIN_EVOLUTION,
    STRATEGIES,
    CoarseConfig,
    CoarseToFineSearch,
    EvolutionConfig,
    EvolutionSearch,
    RandomSearch,
    make_strategy,
    register_strategy,
    run_search,
)
from autovit_ray.search.cli import config_from_argv
from autovit_ray.search.config import SearchConfig
from autovit_ray.search.synthetic import make_synthetic_problem, tiny_space

HEADING = "A new search strategy"


@pytest.fixture
def documented_strategy(tmp_path):
    """The section's module (its first Python block) and entry point, installed; (name, module name)."""
    (source, _), (toml,) = blocks(HEADING, "python"), blocks(HEADING, "toml")
    with installed(tmp_path / "site", source, toml, STRATEGIES) as plugin:
        yield plugin


def evaluated(strategy):
    return [(e.arch.arch_hash, e.fitness) for e in strategy.history]


def test_the_documented_strategy_runs_in_the_tune_searcher(documented_strategy, ray_session, tmp_path,
                                                           monkeypatch):
    name, module = documented_strategy
    assert name in STRATEGIES.names() and module not in sys.modules  # installed, listed, not imported yet
    factory = STRATEGIES.get(name)  # loads the entry point
    assert factory is sys.modules[module].hill_climb
    # tiny Tune trials: no result files, no periodic experiment snapshots; Tune's folder in tmp_path
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "1000")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    _, tune_block = blocks(HEADING, "python")
    example = types.ModuleType("extending_strategy_example")  # not importable: Ray ships `trial` by value
    exec(compile(tune_block, "docs/extending.md", "exec"), example.__dict__)

    strategy, problem, cfg = example.searcher.strategy, example.problem, example.cfg
    assert type(strategy) is sys.modules[module].HillClimb and strategy.finished and len(strategy.history) == 12
    reference = make_strategy(name, problem.space, problem.cost_model(), cfg)
    run_search(reference, problem.accuracy)
    assert evaluated(strategy) == evaluated(reference)  # Tune ran the registered strategy, nothing else
    # it climbs: the best arch found beats the first one (a random arch)
    assert max(e.fitness for e in strategy.history) > strategy.history[0].fitness


def test_the_command_line_and_the_config_take_registered_names(documented_strategy):
    name, _ = documented_strategy
    cfg = config_from_argv(["--checkpoint", "ckpt", "--name", "s", "--strategy", name])
    assert cfg.strategy == name
    problem = make_synthetic_problem(tiny_space(), seed=5, num_classes=10)
    assert make_strategy(cfg.strategy, problem.space, problem.cost_model(), cfg).kind == "hill-climb"
    with pytest.raises(ValueError, match=r"--strategy 'hill' is unknown: expected one of \['random', 'evolution', "
                                         r"'coarse-to-fine', 'coarse-to-fine-dominance', .*'hill-climb'"):
        SearchConfig(name="s", checkpoint="ckpt", strategy="hill")


def test_the_built_in_strategies_are_built_as_before():
    """The registry's factories build what `python -m autovit_ray.search` built from the same settings."""
    problem = make_synthetic_problem(tiny_space(), seed=5, num_classes=10)
    cfg = SearchConfig(name="s", checkpoint="ckpt", population=6, generations=3, parents=2, coarse_samples=40,
                       skeletons=3, seed=4)
    space, costs = problem.space, problem.cost_model()

    def evolution(rates: EvolutionConfig) -> EvolutionConfig:
        return EvolutionConfig(6, 3, num_parents=2, p_depth=rates.p_depth, p_block=rates.p_block)

    before = {
        "random": RandomSearch(space, costs, max_evaluations=18, seed=4),
        "evolution": EvolutionSearch(space, costs, evolution(PLAIN_EVOLUTION), max_evaluations=18, seed=4),
        "coarse-to-fine": CoarseToFineSearch(space, costs, evolution(FINE_STAGE), CoarseConfig(40, 3),
                                             max_evaluations=18, seed=4),
        "coarse-to-fine-dominance": CoarseToFineSearch(space, costs, evolution(FINE_STAGE), CoarseConfig(40, 3),
                                                       max_evaluations=18, seed=4, selection="dominance")}
    assert list(STRATEGIES)[:4] == list(before)
    for name, strategy in before.items():
        built = make_strategy(name, space, costs, cfg)
        assert type(built) is type(strategy) and built.settings() == strategy.settings(), name
        assert evaluated(run_search(built, problem.accuracy)) == evaluated(run_search(strategy, problem.accuracy))


def test_the_strategy_once_called_pareto_keeps_working_and_its_searches_resume():
    from autovit_ray.search.driver import search_identity

    with pytest.warns(FutureWarning, match="search strategy 'pareto' in --strategy is deprecated: it was renamed "
                                           "'coarse-to-fine-dominance'"):
        old = SearchConfig(name="s", checkpoint="ckpt", strategy="pareto")
    assert old.strategy == "coarse-to-fine-dominance"
    assert old.to_argv()[-2:] == ["--strategy", "coarse-to-fine-dominance"]
    space = tiny_space()
    context = {"checkpoint": "0" * 64, "settings": {}}

    def identity(cfg: SearchConfig) -> str:
        return search_identity(cfg, context, space, 1, Path("ckpt"))[0]

    renamed = SearchConfig(name="s", checkpoint="ckpt", strategy="coarse-to-fine-dominance")
    assert identity(renamed) == identity(old) != identity(SearchConfig(name="s", checkpoint="ckpt"))


def test_a_name_is_registered_once():
    def toy(space, costs, settings):
        return RandomSearch(space, costs, max_evaluations=1, seed=settings.seed)

    with pytest.raises(ValueError, match="search strategy 'random' is already registered .*random_search.*replace=True"):
        register_strategy("random")(toy)
    with pytest.raises(ValueError, match="'pareto' is the old name of the search strategy 'coarse-to-fine-dominance'"):
        register_strategy("pareto")(toy)
    with pytest.raises(ValueError, match="must be a factory"):
        STRATEGIES.register("toy", 3)
    with pytest.raises(ValueError, match="a search strategy name must be a non-empty string"):
        register_strategy(" toy")(toy)
    original = STRATEGIES.get("random")
    try:
        assert register_strategy("random", replace=True)(toy) is toy and STRATEGIES.get("random") is toy
    finally:
        register_strategy("random", replace=True)(original)
    assert "toy" not in STRATEGIES


def test_a_module_named_in_autovit_ray_plugins_registers_on_the_first_miss(tmp_path, monkeypatch):
    """The one plugin mechanism of every registry: a module of the user's (not an installed package)
    named in AUTOVIT_RAY_PLUGINS is imported on the first name the registry does not know."""
    from autovit_ray import plugins

    (tmp_path / "my_plugin_strategy.py").write_text(
        "from autovit_ray.search import register_strategy\n"
        "from autovit_ray.search.algorithms import RandomSearch\n"
        "@register_strategy('plugin-random')\n"
        "def plugin_random(space, costs, settings):\n"
        "    return RandomSearch(space, costs)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(plugins.PLUGINS_ENV, "my_plugin_strategy")
    monkeypatch.setattr(plugins, "_imported", set())
    try:
        assert "plugin-random" not in STRATEGIES._entries
        assert STRATEGIES.get("plugin-random").__name__ == "plugin_random"
    finally:
        STRATEGIES.unregister("plugin-random")
        sys.modules.pop("my_plugin_strategy", None)
