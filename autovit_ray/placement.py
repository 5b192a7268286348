"""Resource plans per node: what each training worker and evaluator actor reserves, and whether the
job can be placed on the nodes that are up (`now`) and on the largest cluster the autoscaler may
start (`max`).

A Ray placement group is placed bundle by bundle on single nodes, so a plan made against cluster
totals can ask for more CPUs per worker than any node has and then wait forever. Here every worker
is a bundle {CPU, GPU} packed onto concrete nodes. Pure: `adapters.cluster_node_groups` reads a
live cluster, `node_groups_from_launcher` / `node_groups_from_rayjob` read the cluster files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

EPS = 1e-6  # Ray counts resources in units of 1e-4


@dataclass(frozen=True)
class NodeGroup:
    """Nodes of one shape: `now` of them are up, and the cluster may have `max` (the autoscaler's
    node type; `max == now` on a fixed cluster)."""

    name: str
    cpus: float
    gpus: float
    now: int
    max: int
    head: bool = False


@dataclass(frozen=True)
class Cluster:
    """The node groups, and whether `max` is known (a fixed cluster, a cluster file, or the autoscaler's
    node types) rather than assumed equal to the nodes that are up."""

    groups: tuple[NodeGroup, ...]
    max_known: bool

    def describe(self, which: str) -> str:
        return ", ".join(f"{getattr(g, which)} x {g.name} ({g.cpus:g} CPU, {g.gpus:g} GPU)"
                         for g in self.groups if getattr(g, which)) or "no nodes"


@dataclass(frozen=True)
class TrainerPlan:
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float  # 0: trains on CPU
    torch_threads: int


@dataclass(frozen=True)
class EvaluatorPlan:
    count: int
    cpus: float
    gpus: float


@dataclass(frozen=True)
class ResourcePlan:
    supernets: dict[str, TrainerPlan]
    evaluators: EvaluatorPlan | None
    fits_now: bool
    fits_max: bool

    def to_json(self) -> dict[str, Any]:
        return {"supernets": {name: asdict(plan) for name, plan in self.supernets.items()},
                "evaluators": asdict(self.evaluators) if self.evaluators else None,
                "fits": {"now": self.fits_now, "max": self.fits_max}}


Bundle = tuple[float, float]  # (CPUs, GPUs) of one worker or actor


def resolve_use_gpu(use_gpu: bool | str, cluster: Cluster) -> bool:
    """`ray.use_gpu`: true / false as given; 'auto' is true when a node with GPUs is up or can be started.
    A cluster that has no GPU node up and does not say which nodes it can add cannot answer it."""
    if isinstance(use_gpu, bool):
        return use_gpu
    if any(g.gpus > 0 and (g.now or g.max) for g in cluster.groups):
        return True
    if cluster.max_known:
        return False
    raise ValueError("ray.use_gpu is 'auto', but this cluster has no GPU node up and does not say which "
                     "nodes its autoscaler can start; set ray.use_gpu true (wait for GPU nodes) or false "
                     "(train on CPUs)")


def _nodes(cluster: Cluster, which: str) -> list[Bundle]:
    return [(g.cpus, g.gpus) for g in cluster.groups for _ in range(getattr(g, which))]


def fits(bundles: Sequence[Bundle], nodes: Sequence[Bundle]) -> bool:
    """Whether every bundle gets a node with room for it (first fit, largest bundles first; Ray's
    PACK strategy may use any node for any bundle)."""
    free = [list(node) for node in nodes]
    for cpus, gpus in sorted(bundles, key=lambda b: (b[1], b[0]), reverse=True):
        for node in free:
            if node[0] + EPS >= cpus and node[1] + EPS >= gpus:
                node[0] -= cpus
                node[1] -= gpus
                break
        else:
            return False
    return True


def _round_cpus(cpus: float) -> float:
    """Whole CPUs from 1 up; below, hundredths (fractional CPUs for several trainers on a small machine)."""
    return float(math.floor(cpus + EPS)) if cpus >= 1 - EPS else max(0.01, math.floor(cpus * 100 + EPS) / 100)


def default_worker_cpus(workers: int, gpus: float, nodes: Sequence[Bundle]) -> float:
    """The most CPUs each of `workers` workers (each with `gpus` GPUs) can have with all of them
    placed on `nodes`: the largest node share cpus / k that still packs every worker. 0 when even
    0.01 CPU each does not fit (no node with the GPUs)."""
    hosts = [node for node in nodes if node[1] + EPS >= gpus]
    candidates = sorted({_round_cpus(c / k) for c, _ in hosts for k in range(1, workers + 1)}, reverse=True)
    for cpus in candidates:
        if fits([(cpus, gpus)] * workers, hosts):
            if gpus > 0:  # a GPU worker must land on any GPU node: no more CPUs than the smallest has
                cpus = min(cpus, min(c for c, _ in hosts))
            return cpus
    return 0.0


def plan_trainers(supernets: Sequence[str], num_workers: int, use_gpu: bool | str, gpus_per_worker: float,
                  cpus_per_worker: float | None, torch_threads: int | None, cluster: Cluster) -> dict[str, TrainerPlan]:
    """One `TrainerPlan` per supernet (all trained at once). CPUs per worker: as configured, else the
    largest share that places every worker on the cluster's largest form (`max`). Raises ValueError
    when no node type can host a worker."""
    gpu = resolve_use_gpu(use_gpu, cluster)
    gpus = gpus_per_worker if gpu else 0.0
    workers = len(supernets) * num_workers
    nodes = _nodes(cluster, "max")
    hosts = [node for node in nodes if node[1] + EPS >= gpus]
    if not hosts:
        raise ValueError(f"no node can host a training worker with {gpus:g} GPU: the cluster has "
                         f"{cluster.describe('max')}; set ray.use_gpu false or add GPU nodes")
    cpus = cpus_per_worker if cpus_per_worker is not None else default_worker_cpus(workers, gpus, nodes)
    if cpus == 0:  # too many workers for the GPUs: one GPU's share of a node each, and the plan does not fit
        cpus = _round_cpus(min(c / max(1, math.floor(g / gpus + EPS)) if gpus else c for c, g in hosts))
    if cpus > max(c for c, _ in hosts) + EPS:
        raise ValueError(f"a training worker needs {cpus:g} CPU and {gpus:g} GPU, more than any node the cluster "
                         f"has or can start ({cluster.describe('max')}); lower ray.cpus_per_worker")
    threads = torch_threads or max(1, round(cpus))
    plan = TrainerPlan(num_workers, cpus, gpus, threads)
    return {name: plan for name in supernets}


def concurrent_trainings(cluster: Cluster, num_workers: int, use_gpu: bool | str, gpus_per_worker: float,
                         cpus_per_worker: float | None, torch_threads: int | None, limit: int) -> int:
    """How many trainings of `num_workers` workers each the cluster at its largest holds at once (1 to
    `limit`): every worker with its configured CPUs (default: its torch threads, else one CPU) and, when
    it trains on GPUs, its GPUs. On a 2-CPU machine two one-thread trainings of small models beat one
    two-thread training (about 1.3x the images per second), so each gets a CPU of its own."""
    gpus = gpus_per_worker if resolve_use_gpu(use_gpu, cluster) else 0.0
    cpus = cpus_per_worker or torch_threads or 1
    nodes = _nodes(cluster, "max")
    count = 1
    while count < limit and fits([(cpus, gpus)] * (num_workers * (count + 1)), nodes):
        count += 1
    return count


def plan_evaluators(count: int, cpus: float, gpus: float, cluster: Cluster) -> EvaluatorPlan:
    """The search's evaluator actors: `count` of (`cpus`, `gpus`), fractional GPUs allowed."""
    if gpus > 0 and not any(g.gpus + EPS >= gpus and (g.now or g.max) for g in cluster.groups):
        raise ValueError(f"gpus_per_evaluator {gpus:g}: no node of the cluster has that many GPUs "
                         f"({cluster.describe('max')}); use 0 for CPU evaluators")
    return EvaluatorPlan(count, cpus, gpus)


def make_plan(cluster: Cluster, supernets: Mapping[str, TrainerPlan] | None = None,
              evaluators: EvaluatorPlan | None = None) -> ResourcePlan:
    """The plan with its fit: the trainers run together; the evaluators run later, on their own."""
    jobs: list[list[Bundle]] = []
    if supernets:
        jobs.append([(p.cpus_per_worker, p.gpus_per_worker) for p in supernets.values() for _ in range(p.workers)])
    if evaluators:
        jobs.append([(evaluators.cpus, evaluators.gpus)] * evaluators.count)
    fit = {which: all(fits(job, _nodes(cluster, which)) for job in jobs) for which in ("now", "max")}
    return ResourcePlan(dict(supernets or {}), evaluators, fit["now"], fit["max"])


def check_fits(plan: ResourcePlan, cluster: Cluster) -> None:
    """Refuses, before anything starts, a plan that even the largest cluster cannot place."""
    if not plan.fits_max:
        raise ValueError(f"the resource plan {plan.to_json()} does not fit the cluster even at its largest "
                         f"({cluster.describe('max')}): lower ray.num_workers, ray.cpus_per_worker, the "
                         "evaluators or their CPUs / GPUs")


# --- cluster files -------------------------------------------------------------------------------

def _quantity(value: Any) -> float:
    """A Kubernetes CPU quantity: 8, "8", "500m"."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def node_groups_from_launcher(config: Mapping[str, Any]) -> Cluster:
    """The node types of a Ray cluster-launcher YAML. Each must declare `resources: {CPU, GPU}`: the
    autoscaler reads them from there for nodes it has not started yet."""
    groups = []
    head = config.get("head_node_type")
    for name, spec in (config.get("available_node_types") or {}).items():
        resources = spec.get("resources") or {}
        if "CPU" not in resources:
            raise ValueError(f"node type {name!r} declares no resources.CPU; the plan (and the autoscaler, for "
                             "nodes not yet started) needs resources: {CPU: <n>, GPU: <n>}")
        low = 1 if name == head else int(spec.get("min_workers", 0))
        high = 1 if name == head else int(spec.get("max_workers", config.get("max_workers", 0)))
        groups.append(NodeGroup(name, float(resources["CPU"]), float(resources.get("GPU", 0)), low, high,
                                head=name == head))
    if not groups:
        raise ValueError("the cluster file has no available_node_types")
    return Cluster(tuple(groups), max_known=True)


def node_groups_from_rayjob(manifest: Mapping[str, Any]) -> Cluster:
    """The head and worker groups of a KubeRay RayJob or RayCluster: CPUs and GPUs as Ray derives them
    (rayStartParams num-cpus / num-gpus, else the first container's limits), `replicas` up at the
    start, `maxReplicas` at most (when the in-tree autoscaler is on; else `replicas`)."""
    spec = manifest.get("spec", {})
    cluster_spec = spec.get("rayClusterSpec", spec)
    autoscaling = bool(cluster_spec.get("enableInTreeAutoscaling"))

    def shape(group: Mapping[str, Any]) -> tuple[float, float]:
        params = group.get("rayStartParams") or {}
        limits = group["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {})
        cpus = params.get("num-cpus", limits.get("cpu"))
        if cpus is None:
            raise ValueError("a RayJob group sets neither rayStartParams.num-cpus nor a cpu limit")
        return _quantity(cpus), float(params.get("num-gpus", limits.get("nvidia.com/gpu", 0)))

    groups = [NodeGroup("head", *shape(cluster_spec["headGroupSpec"]), 1, 1, head=True)]
    for group in cluster_spec.get("workerGroupSpecs", []):
        now = int(group.get("replicas", group.get("minReplicas", 0)))
        high = int(group.get("maxReplicas", now)) if autoscaling else now
        groups.append(NodeGroup(group["groupName"], *shape(group), now, high))
    return Cluster(tuple(groups), max_known=True)


def read_cluster_file(path: str) -> Cluster:
    """A cluster-launcher YAML or a KubeRay RayJob / RayCluster manifest, by its content."""
    import yaml

    try:
        with open(path) as f:
            document = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"--cluster-file {path}: cannot read it as YAML ({e})") from None
    if isinstance(document, Mapping) and document.get("kind") in ("RayJob", "RayCluster"):
        return node_groups_from_rayjob(document)
    if isinstance(document, Mapping) and "available_node_types" in document:
        return node_groups_from_launcher(document)
    raise ValueError(f"--cluster-file {path}: expected a Ray cluster-launcher YAML (available_node_types) or a "
                     "KubeRay RayJob / RayCluster manifest (kind)")
