"""The experiment layout (autovit_ray/experiment.py) is the only code that spells a path inside an
experiment directory, and what it spells is what the stages write."""

from __future__ import annotations

import ast
from pathlib import Path

from autovit_ray.experiment import Experiment

PACKAGE = Path(__file__).resolve().parents[1] / "autovit_ray"
# The names of an experiment's parts (experiment.py's docstring draws the tree).
PART_NAMES = {"checkpoints", "luts", "search", "tune", "retrain", "references", "compare", "fidelity", "pipeline",
              "arch_log", "spaces", "mlflow.db", "eval_cache.sqlite", "results.json", "pipeline_summary.json",
              "train_summary.json", "report.html", "config.yaml"}


def _path_spellings(path: Path) -> list[str]:
    """`<expr> / "<part>"` joins, and `.parent.parent.parent` / `.parents[2]` climbs, in one file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant)
                and node.right.value in PART_NAMES):
            found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: / {node.right.value!r}")
        elif isinstance(node, ast.Attribute) and node.attr == "parent" and isinstance(node.value, ast.Attribute) \
                and node.value.attr == "parent" and isinstance(node.value.value, ast.Attribute) \
                and node.value.value.attr == "parent":
            found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: .parent.parent.parent")
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "parents" \
                and isinstance(node.slice, ast.Constant) and node.slice.value == 2:
            found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: .parents[2]")
    return found


def test_only_the_experiment_module_spells_the_layout():
    found = [spelling for path in sorted(PACKAGE.rglob("*.py")) if path.name != "experiment.py"
             for spelling in _path_spellings(path)]
    assert not found, "paths inside an experiment spelled outside autovit_ray/experiment.py:\n" + "\n".join(found)


def test_the_layout(tmp_path):
    exp = Experiment(tmp_path / "digits-demo")
    assert exp.lut("xxs") == tmp_path / "digits-demo" / "luts" / "xxs.parquet"
    assert exp.search_results("c2f") == tmp_path / "digits-demo" / "search" / "c2f" / "results.json"
    assert exp.supernet_checkpoints("xs") == tmp_path / "digits-demo" / "checkpoints" / "xs"
    assert exp.tracking_uri == f"sqlite:///{(tmp_path / 'digits-demo' / 'mlflow.db').resolve()}"
    assert exp.tune_dir("c2f", "abc").is_absolute() and exp.tune_dir("c2f", "abc").name == "c2f-abc"
    checkpoint = exp.supernet_checkpoints("xxs") / "epoch_3"
    assert Experiment.of_checkpoint(checkpoint) == Experiment(exp.root.resolve())
    assert Experiment("~/x").root == Path.home() / "x"
