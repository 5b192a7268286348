"""Every `python -m autovit_ray.<cli>` command README and docs/ show parses with that CLI's own parser,
and the train and pipeline commands resolve their configs (every `--set` field exists). README's
commands also run, in order, in the integration step (tests/test_integration_demo.py); docs/'s
commands train, profile or search for long on data a user brings (or need macOS), so they are checked
here as far as that is possible without their inputs."""

from __future__ import annotations

import pytest
from cli_commands import REPO, bash_blocks, commands, package_argv, parse

TEXTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHOWN = [(path.relative_to(REPO).as_posix(), found) for path in TEXTS for block in bash_blocks(path)
         for command in commands(block) if (found := package_argv(command))]
# commands that load a user's own registrations (docs/extending.md): their configs resolve only with that
# module, which tests/test_extending_datasets.py gives them in a process of their own
WITH_PLUGINS = [found for path in TEXTS for block in bash_blocks(path) for command in commands(block)
                if "AUTOVIT_RAY_PLUGINS=" in command and (found := package_argv(command))]


def test_the_texts_show_commands_of_every_documented_cli():
    shown = {module for _, (module, _) in SHOWN}
    assert {"autovit_ray.train", "autovit_ray.profile", "autovit_ray.search", "autovit_ray.export",
            "autovit_ray.compare", "autovit_ray.pipeline", "autovit_ray.report"} <= shown, shown


@pytest.mark.parametrize("where,module,args", [(w, m, a) for w, (m, a) in SHOWN],
                         ids=[f"{w}:{m.split('.')[-1]}-{i}" for i, (w, (m, _)) in enumerate(SHOWN)])
def test_shown_command_parses(where, module, args):
    parse(module, args)


@pytest.mark.parametrize("where,module,args", [(w, m, a) for w, (m, a) in SHOWN
                                               if m in ("autovit_ray.train", "autovit_ray.pipeline")
                                               and (m, a) not in WITH_PLUGINS])
def test_shown_train_and_pipeline_configs_resolve(where, module, args, tmp_path, monkeypatch):
    from autovit_ray.pipeline import load_pipeline_config
    from autovit_ray.train import config_from_args

    parsed = parse(module, args)
    if module == "autovit_ray.train":
        if parsed.arch is None:  # --arch needs the demo's search: the integration step runs it
            config_from_args(parsed)
    elif not str(parsed.config).endswith(".yaml"):  # a user's own file (mydata.yaml)
        load_pipeline_config(parsed.config, parsed.set)


def test_a_stale_flag_is_caught():
    with pytest.raises(AssertionError, match="does not parse"):
        parse(*package_argv(".venv/bin/python -m autovit_ray.search --no-such-flag 1"))
