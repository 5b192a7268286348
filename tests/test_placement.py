"""Resource plans per node (autovit_ray/placement.py): the packing, the default CPU share, use_gpu
'auto', the fit against the nodes up and the largest cluster, the cluster files' arithmetic, and
`--dry-run` of the train and search commands."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from autovit_ray.placement import (
    Cluster,
    NodeGroup,
    concurrent_trainings,
    fits,
    make_plan,
    node_groups_from_launcher,
    node_groups_from_rayjob,
    plan_evaluators,
    plan_trainers,
    read_cluster_file,
    resolve_use_gpu,
)

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = ROOT / "cluster" / "autovit-cluster.yaml"
RAYJOB = ROOT / "cluster" / "rayjob-pipeline.yaml"
JOBS = ROOT / "cluster" / "jobs.yaml"


def cluster(*groups: NodeGroup, max_known: bool = True) -> Cluster:
    return Cluster(groups, max_known)


def trainers(c: Cluster, supernets: int = 3, workers: int = 1, use_gpu: bool | str = "auto", gpus: float = 1.0,
             cpus: float | None = None) -> dict:
    return plan_trainers(["xxs", "xs", "s"][:supernets], workers, use_gpu, gpus, cpus, None, c)


def test_fits_packs_bundles_on_single_nodes_not_against_totals():
    assert fits([(3, 0), (3, 0)], [(4, 0), (2, 0), (2, 0)]) is False  # 8 CPUs in all, no node takes a second 3
    assert fits([(3, 0), (1, 0), (2, 0), (2, 0)], [(4, 0), (4, 0)]) is True
    assert fits([(1, 1)], [(16, 0)]) is False and fits([(1, 0.5)] * 2, [(2, 1)]) is True
    assert fits([], []) is True


def test_the_rayjob_bug_cpus_per_worker_from_the_nodes_not_the_totals():
    # The RayJob before this plan: a 4-CPU head and three 8-CPU nodes; shared by totals, (4 + 24) / 3 = 9
    # CPUs per worker, which no node has: the placement group would never be ready.
    c = cluster(NodeGroup("head", 4, 0, 1, 1, head=True), NodeGroup("workers", 8, 0, 3, 3))
    plan = trainers(c, use_gpu=False)
    assert {p.cpus_per_worker for p in plan.values()} == {8.0}
    assert make_plan(c, plan).fits_now


def test_default_share_on_a_laptop_is_fractional_and_gpu_workers_skip_the_head():
    laptop = cluster(NodeGroup("head", 2, 0, 1, 1, head=True))
    assert trainers(laptop)["s"].cpus_per_worker == 0.66  # 3 trainers on 2 CPUs
    assert trainers(laptop, supernets=1)["xxs"].cpus_per_worker == 2.0
    c = cluster(NodeGroup("head", 16, 0, 1, 1, head=True), NodeGroup("gpu", 6, 1, 3, 3))
    plan = trainers(c)
    assert {(p.cpus_per_worker, p.gpus_per_worker, p.torch_threads) for p in plan.values()} == {(6.0, 1.0, 6)}
    # two workers per supernet on 2-GPU nodes of 12 CPUs: 6 each, never more than a GPU node can give
    c = cluster(NodeGroup("head", 4, 0, 1, 1, head=True), NodeGroup("gpu", 12, 2, 3, 3))
    assert trainers(c, workers=2)["xs"].cpus_per_worker == 6.0


def test_concurrent_trainings_give_each_worker_its_cpus_or_gpus():
    laptop = cluster(NodeGroup("head", 2, 0, 1, 1, head=True))
    assert concurrent_trainings(laptop, 1, False, 0.0, None, None, limit=16) == 2  # a CPU each
    assert concurrent_trainings(laptop, 1, False, 0.0, None, 2, limit=16) == 1  # two threads each: one at a time
    assert concurrent_trainings(laptop, 1, False, 0.0, 0.5, None, limit=16) == 4
    assert concurrent_trainings(laptop, 1, False, 0.0, 0.5, None, limit=3) == 3
    assert concurrent_trainings(laptop, 2, False, 0.0, 4, None, limit=3) == 1  # never fewer than one
    gpus = cluster(NodeGroup("head", 8, 0, 1, 1, head=True), NodeGroup("gpu", 8, 4, 2, 2))
    assert concurrent_trainings(gpus, 1, "auto", 1.0, None, None, limit=20) == 8  # a GPU each: 2 nodes x 4
    assert concurrent_trainings(gpus, 2, True, 0.5, 2, None, limit=20) == 4  # 2 workers x 0.5 GPU, 2 CPUs each
    # the plan of that many at once is the one a run of that many supernets gets
    plan = plan_trainers([f"run{i}" for i in range(2)], 1, False, 0.0, None, None, laptop)
    assert {(p.cpus_per_worker, p.torch_threads) for p in plan.values()} == {(1.0, 1)}


def test_use_gpu_auto_resolves_from_the_nodes_that_can_exist():
    autoscaling = cluster(NodeGroup("head", 8, 0, 1, 1, head=True), NodeGroup("gpu", 4, 1, 0, 4))
    assert resolve_use_gpu("auto", autoscaling) is True  # none up yet: the autoscaler can start them
    assert resolve_use_gpu(False, autoscaling) is False
    assert resolve_use_gpu("auto", cluster(NodeGroup("head", 8, 0, 1, 1, head=True))) is False
    unknown = cluster(NodeGroup("head", 8, 0, 1, 1, head=True), max_known=False)
    with pytest.raises(ValueError, match="ray.use_gpu is 'auto'.*set ray.use_gpu true .* or false"):
        resolve_use_gpu("auto", unknown)
    assert resolve_use_gpu(True, unknown) is True


def test_plans_that_cannot_be_placed_fail_with_the_numbers():
    c = cluster(NodeGroup("head", 8, 0, 1, 1, head=True), NodeGroup("cpu", 16, 0, 0, 2))
    with pytest.raises(ValueError, match="no node can host a training worker with 1 GPU: the cluster has "
                                         "1 x head \\(8 CPU, 0 GPU\\), 2 x cpu \\(16 CPU, 0 GPU\\)"):
        trainers(c, use_gpu=True)
    with pytest.raises(ValueError, match="needs 32 CPU and 0 GPU, more than any node"):
        trainers(c, use_gpu=False, cpus=32)
    # each worker fits a node, all together do not (3 x 12 CPUs on one 16 and the 8): fits is false
    plan = make_plan(c, trainers(c, use_gpu=False, cpus=12))
    assert not plan.fits_now and not plan.fits_max
    with pytest.raises(ValueError, match="gpus_per_evaluator 2: no node of the cluster has that many GPUs"):
        plan_evaluators(2, 1.0, 2.0, cluster(NodeGroup("gpu", 8, 1, 1, 1)))


def test_fractional_gpu_evaluators_share_a_gpu():
    c = cluster(NodeGroup("head", 4, 0, 1, 1, head=True), NodeGroup("gpu", 8, 1, 1, 2))
    plan = make_plan(c, evaluators=plan_evaluators(4, 1.0, 0.5, c))
    assert plan.fits_now is False and plan.fits_max is True  # 2 per GPU: one more GPU node
    assert plan.to_json() == {"supernets": {}, "evaluators": {"count": 4, "cpus": 1.0, "gpus": 0.5},
                              "fits": {"now": False, "max": True}}


def test_cluster_file_readers_and_their_errors(tmp_path):
    launcher = yaml.safe_load(LAUNCHER.read_text())
    c = node_groups_from_launcher(launcher)
    assert [(g.name, g.cpus, g.gpus, g.now, g.max, g.head) for g in c.groups] == [
        ("head", 8.0, 0.0, 1, 1, True), ("cpu_worker", 16.0, 0.0, 0, 4, False), ("gpu_worker", 4.0, 1.0, 0, 4, False)]
    launcher["available_node_types"]["gpu_worker"]["resources"] = {}
    with pytest.raises(ValueError, match="node type 'gpu_worker' declares no resources.CPU"):
        node_groups_from_launcher(launcher)
    rayjob = yaml.safe_load(RAYJOB.read_text())
    c = node_groups_from_rayjob(rayjob)
    assert [(g.name, g.cpus, g.gpus, g.now, g.max) for g in c.groups] == [("head", 4.0, 0.0, 1, 1), ("gpu", 8.0, 1.0, 0, 3)]
    rayjob["spec"]["rayClusterSpec"]["enableInTreeAutoscaling"] = False  # no autoscaler: replicas is all
    assert node_groups_from_rayjob(rayjob).groups[1].max == 0
    rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["rayStartParams"] = {"num-cpus": "500m"}
    assert node_groups_from_rayjob(rayjob).groups[1].cpus == 0.5
    other = tmp_path / "other.yaml"
    other.write_text("kind: Deployment\n")
    with pytest.raises(ValueError, match="expected a Ray cluster-launcher YAML .* or a KubeRay RayJob"):
        read_cluster_file(str(other))
    with pytest.raises(ValueError, match="cannot read it as YAML"):
        read_cluster_file(str(tmp_path / "missing.yaml"))


def _train_plan(argv: list[str], c: Cluster):
    from autovit_ray.ray_train import plan_training
    from autovit_ray.train import build_parser, config_from_args

    cfg = config_from_args(build_parser().parse_args(argv))
    return plan_training(cfg, [Path(s).stem for s in cfg.supernets], c)


def _search_plan(argv: list[str], c: Cluster):
    from autovit_ray.search.cli import config_from_argv

    cfg = config_from_argv(argv)
    assert cfg.cpus_per_evaluator is not None, "a cluster file's search names its CPUs per evaluator"
    return make_plan(c, evaluators=plan_evaluators(cfg.evaluators, cfg.cpus_per_evaluator, cfg.gpus_per_evaluator, c))


def _commands(entrypoint: str) -> dict[str, list[str]]:
    """{module: argv} of each `python -m autovit_ray.<module> ...` in a shell command line."""
    out = {}
    for command in entrypoint.split("&&"):
        words = shlex.split(command)
        assert words[:2] == ["python", "-m"], command
        out[words[2].removeprefix("autovit_ray.")] = words[3:]
    return out


@pytest.mark.parametrize("path", [LAUNCHER, RAYJOB], ids=["launcher", "rayjob"])
def test_cluster_files_place_their_own_jobs(path):
    """Every training worker fits a node of its group and the largest cluster holds the whole job; the
    same for the search's evaluators. The numbers come from the plan function the product runs."""
    c = read_cluster_file(str(path))
    if path == RAYJOB:
        commands = _commands(yaml.safe_load(path.read_text())["spec"]["entrypoint"])
    else:
        jobs = yaml.safe_load(JOBS.read_text())
        commands = {name: shlex.split(jobs[name])[3:] for name in ("train", "search")}
    train = _train_plan(commands["train"], c)
    assert train.fits_max, train.to_json()
    for plan in train.supernets.values():
        hosts = [g for g in c.groups if g.gpus >= plan.gpus_per_worker and g.max]
        assert plan.gpus_per_worker == 1.0 and not any(g.head for g in hosts)
        assert plan.cpus_per_worker <= min(g.cpus for g in hosts)
    search = _search_plan(commands["search"], c)
    assert search.fits_max, search.to_json()


def test_train_dry_run_against_a_cluster_file_prints_the_plan():
    out = subprocess.run([sys.executable, "-m", "autovit_ray.train", "--config", "imagenet", "--dry-run",
                          "--cluster-file", str(RAYJOB), "--set", "ray.use_gpu=true", "--set", "ray.num_workers=1"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["fits"] == {"now": False, "max": True}  # the GPU group starts at 0 pods
    assert plan["supernets"]["xs"] == {"workers": 1, "cpus_per_worker": 8.0, "gpus_per_worker": 1.0,
                                       "torch_threads": 8}
    # too many workers for 3 GPU nodes: printed, and exit status 1
    out = subprocess.run([sys.executable, "-m", "autovit_ray.train", "--config", "imagenet", "--dry-run",
                          "--cluster-file", str(RAYJOB), "--set", "ray.use_gpu=true", "--set", "ray.num_workers=2"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 1 and json.loads(out.stdout)["fits"] == {"now": False, "max": False}
    out = subprocess.run([sys.executable, "-m", "autovit_ray.train", "--cluster-file", str(RAYJOB)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and "--cluster-file plans without training: add --dry-run" in out.stderr


def test_dry_run_on_the_live_local_ray(ray_session, trained_digits_experiment, capsys):
    from autovit_ray.pipeline.cli import main as pipeline_main
    from autovit_ray.search.cli import main as search_main
    from autovit_ray.train import main as train_main

    assert train_main(["--config", "digits", "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["fits"] == {"now": True, "max": True} and plan["evaluators"] is None
    assert {p["cpus_per_worker"] for p in plan["supernets"].values()} == {0.66}  # the session's 2 CPUs
    assert search_main(["--checkpoint", str(trained_digits_experiment.dir), "--supernet", "xxs", "--name", "plan",
                        "--evaluators", "2", "--cpus-per-evaluator", "0.5", "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan == {"supernets": {}, "evaluators": {"count": 2, "cpus": 0.5, "gpus": 0.0},
                    "fits": {"now": True, "max": True}}
    assert pipeline_main(["--config", "demo", "--dry-run", "--set", "search.evaluators=2",
                          "--set", "search.cpus_per_evaluator=0.4", "--set", "output_dir=/nonexistent/never-written"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert set(plan["supernets"]) == {"xxs", "xs", "s"} and plan["fits"] == {"now": True, "max": True}
    assert plan["evaluators"] == {"count": 2, "cpus": 0.4, "gpus": 0.0}


def test_training_that_cannot_be_placed_fails_before_anything_is_written(ray_session, tmp_path, capsys):
    from autovit_ray.train import main as train_main

    # three supernets of 2 CPUs each on the session's one 2-CPU node: each fits alone, not all at once
    assert train_main(["--config", "digits", "--output-dir", str(tmp_path), "--set", "ray.cpus_per_worker=2",
                       "--set", "ray.use_gpu=false"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the resource plan ") and "does not fit the cluster even at its largest " \
        "(1 x head (2 CPU, 0 GPU))" in err
    assert not any(tmp_path.iterdir())
