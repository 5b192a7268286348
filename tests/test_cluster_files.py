"""The cluster configs' commands parse with the package's own argument parsers."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from autovit_ray.compare import build_parser as compare_parser
from autovit_ray.export_cli import build_parser as export_parser
from autovit_ray.pipeline import build_parser as pipeline_parser
from autovit_ray.profile import build_parser as profile_parser
from autovit_ray.search.cli import build_parser as search_parser
from autovit_ray.train import build_arg_parser as train_parser

CLUSTER = Path(__file__).resolve().parent.parent / "cluster"
PARSERS = {"autovit_ray.train": train_parser, "autovit_ray.profile": profile_parser,
           "autovit_ray.search": search_parser, "autovit_ray.export": export_parser,
           "autovit_ray.compare": compare_parser, "autovit_ray.pipeline": pipeline_parser}


def commands() -> list[str]:
    launcher = yaml.safe_load((CLUSTER / "autovit-cluster.yaml").read_text())
    rayjob = yaml.safe_load((CLUSTER / "rayjob-pipeline.yaml").read_text())
    assert rayjob["kind"] == "RayJob" and launcher["head_node_type"] in launcher["available_node_types"]
    return [*launcher["jobs"].values(), *rayjob["spec"]["entrypoint"].split("&&")]


@pytest.mark.parametrize("command", commands())
def test_cluster_command_parses(command):
    argv = shlex.split(command)
    assert argv[:2] == ["python", "-m"] and argv[2] in PARSERS, command
    PARSERS[argv[2]]().parse_args(argv[3:])  # exits (SystemExit) on an unknown or missing flag


def test_every_stage_is_covered():
    modules = {shlex.split(c)[2] for c in commands()}
    assert modules == set(PARSERS)


@pytest.mark.parametrize("command", [c for c in commands() if shlex.split(c)[2] in
                                     ("autovit_ray.train", "autovit_ray.pipeline")])
def test_cluster_configs_resolve(command):
    """Beyond the flags: every `--set` field and config file a cluster job names exists."""
    from autovit_ray.pipeline import load_pipeline_config
    from autovit_ray.train import config_from_args
    from autovit_ray.training.config import load_config

    argv = shlex.split(command)
    args = PARSERS[argv[2]]().parse_args(argv[3:])
    if argv[2] == "autovit_ray.train":
        assert config_from_args(args).data.data_dir
    else:
        cfg = load_pipeline_config(args.config, args.set)
        assert load_config(cfg.train.config, cfg.train.set).data.data_dir
