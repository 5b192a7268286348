"""A new user's first hour, as README tells it: `make demo`'s pipeline (Ctrl-C in the middle of the
search, a rerun that resumes), then README's next commands **as written**, in order, from a project
directory that holds the same `.venv`, `Makefile` and `pyproject.toml` as this checkout.

The demo runs with its own settings (configs/pipeline/demo.yaml): README's first next command,
`pipeline --config demo`, must find every stage up to date. README's commands are read from README
itself (its "Entry points" block, then the Model Registry block), so the test cannot drift from the
text. Three kinds of command are not run to their end, each for a stated reason:
- the commands that train or search for many minutes on new settings (UNTIL_PROGRESS) run until they
  show progress (a search its first candidates, one training its first steps, the other trainings that
  they are planned), then get Ctrl-C as a user would: they must stop cleanly (exit 130) and say how to
  resume;
- the command that needs a CIFAR-10 copy the repository does not ship (NEEDS_USER_DATA) has its config
  resolved (`--print-config`), nothing trained;
- `make mlflow-ui` is a server: it must answer on its port, then it is stopped.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from cli_commands import commands
from integration_utils import REPO, RayTemp, processes_tagged, tail, wait_for

# The per-candidate progress line of `python -m autovit_ray.search`.
PROGRESS = re.compile(r"^\[(\w+)-coarse-to-fine-\w+\] (\d+)/(\d+) evaluated", re.M)
# The line `run_training` prints once Ray is up and the training is planned, before the workers start.
TRAINING_PLANNED = re.compile(r"^training \[", re.M)
# README commands that would train or search for many minutes: run until this shows, then Ctrl-C.
# (Nothing later in README reads what they would write; the search that export and `train --arch` read
# runs to its end.) Ctrl-C mid-epoch is `train --config digits --name`'s; the other training commands
# take it as soon as their training is planned (the 30-60 s of starting Ray Train's workers each, of
# which this test had four, bought no more coverage), which checks a second moment of Ctrl-C.
UNTIL_PROGRESS = {
    "--force search": re.compile(r"^\[\w+-evolution-\w+\] \d+/\d+ evaluated", re.M),
    "--stages retrain,compare": TRAINING_PLANNED,
    "autovit_ray.train --config digits --name": re.compile(r"\bepoch [1-9]"),
    "autovit_ray.train --config digits --arch": TRAINING_PLANNED,
    "autovit_ray.fidelity": TRAINING_PLANNED,
}
NEEDS_USER_DATA = "data.data_dir=/data/cifar10"
SERVER = "make mlflow-ui"


def _atomic_leftovers(root: Path) -> list[Path]:
    """Temporary files of autovit_ray.io.atomic_path ('.<stem>.<random><suffix>') left behind."""
    return [p for p in root.rglob(".*") if p.is_file() and "tune" not in p.parts
            and re.fullmatch(r"\.[^.]+\.\w{8}(\.\w+)?", p.name)]


def _check_files_whole(exp: Path) -> None:
    from autovit_ray.checkpoint import list_checkpoints, load_supernet

    for path in [*exp.glob("pipeline/*.json"), *exp.glob("search/*/results.json"), *exp.glob("*.json")]:
        json.loads(path.read_text())  # every JSON written so far parses
    for supernet in ("xxs", "xs", "s"):
        for checkpoint in list_checkpoints(exp, supernet):
            load_supernet(checkpoint)  # every complete checkpoint loads
    assert _atomic_leftovers(exp) == []


# ---------------------------------------------------------------------------------------------------
# README's commands


def readme_block(heading: str, after: str = "") -> str:
    """The first ```bash block of README's section `heading` (after the text `after`, when given)."""
    text = (REPO / "README.md").read_text()
    start = text.index(heading)
    if after:
        start = text.index(after, start)
    body = text[text.index("```bash\n", start) + len("```bash\n"):]
    return body[:body.index("```")]


def test_readme_blocks_parse_into_the_commands_the_demo_test_runs():
    """The parsing itself, on README as it is (a unit test: no demo runs)."""
    entry = commands(readme_block("## Entry points"))
    assert entry[0].startswith(".venv/bin/python -m autovit_ray.pipeline --config demo ")
    assert any(c.startswith(".venv/bin/python -m autovit_ray.search ") and "--name xxs-c2f" in c for c in entry)
    assert entry[-1].startswith(SERVER)
    assert sum(NEEDS_USER_DATA in c for c in entry) == 1
    assert all(any(key in c for c in entry) for key in UNTIL_PROGRESS)
    # the few-shot parts run to their end (no Ctrl-C): the folder that names them needs them finished
    fewshot = [c for c in entry if "train.transformer_stages" in c or "autovit_ray.fewshot" in c]
    assert len(fewshot) == 3 and not any(key in c for c in fewshot for key in UNTIL_PROGRESS)
    registry = commands(readme_block("## Searched models in the MLflow Model Registry", after="After `make demo`"))
    assert registry[0].startswith("export MLFLOW_TRACKING_URI=") and registry[-1].startswith("kill %1")


def _project(tmp_path: Path) -> Path:
    """A directory laid out like a clone after `make install`: README's relative paths work in it."""
    venv = Path(sys.prefix)
    stamp, pyproject = venv / ".installed-stamp", REPO / "pyproject.toml"
    if not stamp.is_file() or stamp.stat().st_mtime < pyproject.stat().st_mtime:
        pytest.fail(f"README's make targets would reinstall: {venv} was not installed by `make install` "
                    "after the last change to pyproject.toml (run `make install`, then the tests)")
    proj = tmp_path / "project"
    proj.mkdir()
    for name, target in ((".venv", venv), ("Makefile", REPO / "Makefile"), ("pyproject.toml", pyproject)):
        (proj / name).symlink_to(target)
    return proj


def _run_readme_command(temp: RayTemp, cmd: str, proj: Path, log: Path) -> float:
    """One README command through bash, as a user types it; its wall seconds. Fails with its log."""
    started = time.monotonic()
    env = temp.env()
    if NEEDS_USER_DATA in cmd:
        cmd += " --print-config"  # needs the user's CIFAR-10 copy: the config resolves, nothing trains
    progress = next((p for key, p in UNTIL_PROGRESS.items() if key in cmd), None)
    if cmd.startswith(SERVER):
        proc = temp.spawn(["bash", "-c", cmd], log, env=env, cwd=proj)
        wait_for(lambda: _answers("http://127.0.0.1:5000/") or proc.poll() is not None, timeout=120,
                 what=f"{cmd} to answer ({log})")
        assert proc.poll() is None, f"{cmd} exited:\n{tail(log)}"
        temp.kill_group(proc)
    elif progress is not None:
        proc = temp.spawn(["bash", "-c", cmd], log, env=env, cwd=proj)
        wait_for(lambda: progress.search(log.read_text(errors="replace")) or proc.poll() is not None,
                 timeout=600, what=f"progress of `{cmd}` ({log})")
        assert proc.poll() is None, f"`{cmd}` ended before it was interrupted (exit {proc.poll()}):\n{tail(log)}"
        os.killpg(proc.pid, signal.SIGINT)
        code = temp.wait(proc, 180, cmd, log)
        text = tail(log, 3000)
        assert code == 130 and "rerun the same command to resume" in text, f"`{cmd}` after Ctrl-C, exit {code}:\n{text}"
    else:
        code = temp.run(["bash", "-c", cmd], log, timeout=900, env=env, cwd=proj)
        assert code == 0, f"README's `{cmd}` failed (exit {code}):\n{tail(log)}"
    return time.monotonic() - started


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------------
# The test


@pytest.mark.integration
def test_demo_survives_ctrl_c_and_resumes_then_readme_runs_as_written(tmp_path):
    proj = _project(tmp_path)
    exp = proj / "outputs" / "digits-demo"
    demo = [".venv/bin/python", "-m", "autovit_ray.demo"]  # what `make demo` runs after the install
    with RayTemp() as temp:
        # 1. Ctrl-C (SIGINT to the whole process group, as a terminal sends it) once the search has
        #    evaluated its first candidates.
        log1 = tmp_path / "run1.log"
        proc = temp.spawn(demo, log1, cwd=proj)
        wait_for(lambda: PROGRESS.search(log1.read_text(errors="replace")) or proc.poll() is not None,
                 timeout=900, what=f"the first search candidates (log {log1})")
        assert proc.poll() is None, f"the demo ended before the search:\n{tail(log1)}"
        interrupted_at = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=120)
        text = tail(log1, 3000)
        assert code == 130, f"exit code {code} after Ctrl-C:\n{text}"
        # Ray Train's placement-group cleaner polls a State API the local Ray lacks: quieted, not logged each second
        assert "Failed to query Ray Train Controller actor state" not in log1.read_text(errors="replace")
        assert "rerun the same command to resume" in text
        print(f"Ctrl-C to exit: {time.monotonic() - interrupted_at:.1f} s")
        # no orphaned Ray process of this run (raylet, GCS, workers, actors)
        wait_for(lambda: not processes_tagged(str(temp.path)), timeout=60,
                 what=f"the Ray processes to exit: {processes_tagged(str(temp.path))}")
        _check_files_whole(exp)
        assert (exp / "report.html").is_file(), "an interrupted run still writes the report of what exists"
        assert (exp / "pipeline" / "train.json").is_file(), "training had finished before Ctrl-C"
        # Tune stops on Ctrl-C after the trials in flight: the first search may just have finished (and its
        # stage record been written) by then
        finished_before_ctrl_c = sorted(p.name for p in (exp / "pipeline").glob("search-*.json"))
        assert not (exp / "pipeline_summary.json").exists()

        # 2. The same command resumes: training and tables are reused, the search continues.
        log2 = tmp_path / "run2.log"
        assert temp.run(demo, log2, timeout=900, cwd=proj) == 0, tail(log2)
        text = log2.read_text(errors="replace")
        assert "train: up to date" in text
        assert all(f"profile {s}: up to date" in text for s in ("xxs", "xs", "s"))
        assert "Restoring the run" in text  # the interrupted search continues from its Tune state
        summary = json.loads((exp / "pipeline_summary.json").read_text())
        statuses = {s["stage"]: s["status"] for s in summary["stages"]}
        search_status = "partly reused" if finished_before_ctrl_c else "ran"
        assert statuses == {"train": "reused", "profile": "reused", "search": search_status, "retrain": "not selected",
                            "compare": "ran"}, (statuses, finished_before_ctrl_c)
        searched = summary["outputs"]["searches"]
        # Each supernet is searched unless its smallest subnet is over the reference's latency budget (timing
        # noise decides it for S on 2 cores): then the pipeline says so.
        assert "xxs" in searched and set(searched) <= {"xxs", "xs", "s"}
        for supernet in {"xxs", "xs", "s"} - set(searched):
            assert f"search {supernet}: skipped" in (log1.read_text(errors="replace") + text), supernet
        for supernet in searched:
            results = json.loads(Path(searched[supernet]).read_text())
            assert results["evaluations"] == 8 * 3  # demo.yaml: 3 generations of 8
            best = results["best"][0]
            assert best["test_top1"] >= 90.0, f"{supernet}: searched model at {best['test_top1']}% test top-1"
            assert set(best["exports"]) == {"torchscript", "onnx", "coreml"}
            assert all(Path(p).exists() for p in best["exports"].values())
        _check_no_duplicate_candidates(exp)
        compared = json.loads((exp / "compare" / "compare.json").read_text())
        (peer,) = [r for r in compared["rows"] if r["kind"] == "reference"]
        assert (exp / "references" / "mobilevit_xxs" / "model.pt").is_file(), "the peer was trained"
        assert isinstance(peer["test_top1"], float) and peer["test_top1"] >= 90.0, peer
        assert compared["summary"].startswith("On this machine (torch-cpu)") and compared["summary"] in text
        assert (exp / "report.html").is_file() and f"report: {exp / 'report.html'}" in text
        _check_files_whole(exp)

        # 3. README's next commands, as written and in order. The first finds everything up to date:
        #    nothing runs, Ray is not even started.
        entry = commands(readme_block("## Entry points"))
        registry = commands(readme_block("## Searched models in the MLflow Model Registry", after="After `make demo`"))
        seconds = {}
        for i, cmd in enumerate(entry):
            log = tmp_path / f"readme-{i:02d}.log"
            seconds[cmd[:90]] = _run_readme_command(temp, cmd, proj, log)
            if "autovit_ray.train --config digits --name digits-cli" in cmd:
                _check_runs_stopped(proj / "outputs" / "digits-cli")
            if i == 0:
                summary = json.loads((exp / "pipeline_summary.json").read_text())
                assert {s["status"] for s in summary["stages"]} == {"reused", "not selected"}
                assert "Started a local Ray instance" not in log.read_text(errors="replace")
        # The Model Registry block is one shell session (an export, a server in the background, a request).
        log = tmp_path / "readme-registry.log"
        seconds["registry block"] = _run_readme_command(temp, "set -e\n" + "\n".join(registry), proj, log)
        answer = log.read_text(errors="replace")
        assert "autovit-digits-demo-xxs" in answer and '"predictions"' in answer, tail(log)
        for cmd, s in seconds.items():
            print(f"{s:7.1f} s  {cmd}")
    assert not temp.leftover, f"processes left running: {temp.leftover}"


def _check_runs_stopped(exp: Path) -> None:
    """A training stopped by Ctrl-C shows as KILLED in MLflow, not as running forever."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{exp / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert runs and {r.info.status for r in runs} == {"KILLED"}, [(r.info.run_name, r.info.status) for r in runs]


def _check_no_duplicate_candidates(exp: Path) -> None:
    """Across the interrupted and the resumed run, each search logged every candidate once."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{exp / 'mlflow.db'}")
    for experiment in client.search_experiments():
        parents = [r for r in client.search_runs([experiment.experiment_id], max_results=1000)
                   if "mlflow.parentRunId" not in r.data.tags]
        for parent in parents:
            children = client.search_runs([experiment.experiment_id],
                                          f"tags.mlflow.parentRunId = '{parent.info.run_id}'", max_results=1000)
            hashes = [c.data.params.get("arch_hash") or c.data.tags.get("arch_hash") for c in children]
            hashes = [h for h in hashes if h]
            assert len(hashes) == len(set(hashes)), f"{parent.info.run_name}: a candidate was logged twice"
