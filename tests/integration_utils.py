"""Helpers of the integration tests (real Ray head, simulated multi-node cluster, faults).

Every Ray these tests start lives under its own short temp dir (`/tmp/avr-XXXX`: Ray's Unix sockets
have a ~107-byte path limit, pytest's tmp dirs are too deep) and gets `RAY_TMPDIR=<that dir>` in its
environment, inherited by every process Ray spawns. So the processes a test started are exactly those
whose command line or environment names its temp dir: teardown stops them by PID (SIGTERM, then
SIGKILL) and checks that none is left, and never runs `ray stop`, which would end other sessions' Ray.

Run as a script, this file is the driver of the simulated multi-node test (a subprocess, so its
`ray.cluster_utils.Cluster` never meets the session's `ray.init`):

    python tests/integration_utils.py multinode <output dir> <result json>
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable  # the venv's python (pytest runs under it)
RAY_BIN = str(Path(sys.executable).with_name("ray"))

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import TINY_TRAIN_SETTINGS, tiny_train_argv  # noqa: E402

__all__ = ["PYTHON", "RAY_BIN", "REPO", "TINY_TRAIN_SETTINGS", "RayTemp", "free_port_range", "free_ports",
           "tiny_train_argv", "wait_for"]


# ---------------------------------------------------------------------------------------------------
# Ports, waiting


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together while chosen, so all differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_range(n: int, avoid: Iterable[int] = ()) -> tuple[int, int]:
    """(lo, hi): n consecutive free ports below Linux's ephemeral range (so bind(0) never takes them)."""
    avoid = set(avoid)
    rng = random.Random()
    for _ in range(200):
        lo = rng.randrange(20000, 32000 - n)
        ports = range(lo, lo + n)
        if not avoid.intersection(ports) and all(_port_free(p) for p in ports):
            return lo, lo + n - 1
    raise RuntimeError(f"no {n} consecutive free ports found")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.5,
             alive: subprocess.Popen | None = None) -> Any:
    """Polls predicate() until it returns something truthy (returned); fails after timeout, or at once
    when `alive` (a process the condition depends on) has exited."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if alive is not None and alive.poll() is not None:
            raise AssertionError(f"process {alive.args!r} exited with {alive.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------------
# Processes of one temp dir


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:  # gone, or not ours
        return b""


def processes_tagged(tag: str) -> dict[int, str]:
    """{pid: command line} of the processes whose command line or environment contains `tag`."""
    me, found = os.getpid(), {}
    needle = tag.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        cmdline = _read(f"/proc/{entry}/cmdline")
        if not cmdline:  # a zombie or a kernel thread
            continue
        if needle in cmdline or needle in _read(f"/proc/{entry}/environ"):
            found[int(entry)] = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
    return found


def ray_actor_pids(tag: str, actor_class: str) -> list[int]:
    """PIDs of live Ray actor processes of `actor_class` (process title `ray::<class>...`) under tag."""
    return sorted(pid for pid, cmd in processes_tagged(tag).items() if cmd.startswith(f"ray::{actor_class}"))


def _signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class RayTemp:
    """A short temp dir for one test's Ray processes and the processes started under it.

    `env()` is the environment for them (RAY_TMPDIR set, RAY_ADDRESS removed); `spawn()` starts a
    command in its own session (process group), output to a log file; `close()` stops every process
    of the temp dir (process groups first, then any straggler by PID: SIGTERM, then SIGKILL), records
    what it had to kill in `.stragglers`, and removes the dir. Use as a context manager."""

    def __init__(self, prefix: str = "avr-") -> None:
        self.path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        self.procs: list[subprocess.Popen] = []
        self.stragglers: dict[int, str] = {}
        self.leftover: dict[int, str] = {}

    def __enter__(self) -> RayTemp:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        for key in ("RAY_ADDRESS", "RAY_JOB_ID", "MLFLOW_TRACKING_URI"):
            env.pop(key, None)
        env.update(RAY_TMPDIR=str(self.path), PYTHONUNBUFFERED="1", RAY_USAGE_STATS_ENABLED="0",
                   OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
        env.update(extra)
        return env

    def spawn(self, cmd: Sequence[str], log: Path, env: dict[str, str] | None = None,
              cwd: Path = REPO) -> subprocess.Popen:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env or self.env(), cwd=cwd,
                                    start_new_session=True)
        self.procs.append(proc)
        return proc

    def run(self, cmd: Sequence[str], log: Path, timeout: float, env: dict[str, str] | None = None,
            cwd: Path = REPO) -> int:
        """Runs a command to completion (killing its process group on timeout); its exit code."""
        return self.wait(self.spawn(cmd, log, env, cwd), timeout, " ".join(map(str, cmd)), log)

    def wait(self, proc: subprocess.Popen, timeout: float, what: str, log: Path) -> int:
        """The exit code of a spawned process; on timeout its process group is killed and the test fails."""
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_group(proc)
            raise AssertionError(f"{what} did not finish in {timeout:.0f} s; log {log}:\n{tail(log)}") from None

    @staticmethod
    def kill_group(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
        """SIGTERM to the process's group (it leads one: start_new_session), SIGKILL after grace_s."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.wait(timeout=grace_s)
                # The leader is gone; give the rest of the group the same grace, then the next signal.
                deadline = time.monotonic() + grace_s
                while time.monotonic() < deadline and _group_alive(proc.pid):
                    time.sleep(0.2)
                if not _group_alive(proc.pid):
                    return
            except subprocess.TimeoutExpired:
                pass

    def stop_all(self, grace_s: float = 15.0) -> dict[int, str]:
        """Stops every process started here; returns the ones that were still running afterwards (by tag)."""
        for proc in reversed(self.procs):
            self.kill_group(proc, grace_s)
        stragglers = processes_tagged(str(self.path))
        if stragglers:
            _signal_all(stragglers, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and processes_tagged(str(self.path)):
                time.sleep(0.3)
            _signal_all(processes_tagged(str(self.path)), signal.SIGKILL)
            time.sleep(0.5)
        self.stragglers.update(stragglers)
        return stragglers

    def close(self) -> None:
        self.stop_all()
        self.leftover = processes_tagged(str(self.path))
        shutil.rmtree(self.path, ignore_errors=True)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Zombies count as gone: scan for a live member.
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _read(f"/proc/{entry}/stat").decode(errors="replace")
            if not stat:
                continue
            fields = stat.rsplit(")", 1)[-1].split()
            if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def tail(path: Path, chars: int = 6000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------------------------------------------
# MLflow, Tune


_CLIENTS: dict[str, Any] = {}


def mlflow_runs(db: Path, experiment: str, filter_string: str = "") -> list[Any]:
    """The runs of an MLflow experiment in a sqlite database (one client per database: polling stays quiet)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{db}"
    client = _CLIENTS.get(uri) or _CLIENTS.setdefault(uri, MlflowClient(uri))
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return client.search_runs([found.experiment_id], filter_string, max_results=10000)


def search_tune_dir(output_dir: Path, name: str) -> Path:
    """The one Tune experiment folder of search `name` (`<name>-<search identity>`) under `output_dir`."""
    found = sorted((output_dir / "tune").glob(f"{name}-*"))
    assert len(found) == 1, f"expected one Tune experiment of search {name!r}, found {found}"
    return found[0]


def tune_trial_results(tune_dir: Path) -> list[dict[str, Any]]:
    """Every result a trial of a Tune experiment reported (result.json lines), across runs."""
    results = []
    for path in sorted(tune_dir.glob("*/result.json")):
        for line in path.read_text().splitlines():
            if line.strip():
                try:
                    results.append({**json.loads(line), "_trial_dir": path.parent.name})
                except json.JSONDecodeError:  # a line cut by a kill
                    pass
    return results


# ---------------------------------------------------------------------------------------------------
# The simulated multi-node driver (run in a subprocess)


def write_image_folder(root: Path, per_class: int = 8) -> Path:
    """An ImageNet-style folder of random 20 x 24 px images: 3 classes, `per_class` train and 2 val each."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", 2)):
        for cls in ("cat", "dog", "emu"):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.png")
    return root


def multinode_main(output_dir: str, result_path: str) -> int:
    """3 logical nodes (1 CPU each): the three tiny supernets, one 1-CPU worker each, so each trainer
    needs a node of its own; then an EvaluatorPool of 2 actors (SPREAD) evaluating two archs."""
    import ray
    from ray.cluster_utils import Cluster

    from autovit_ray.checkpoint import find_checkpoint, load_supernet, read_meta
    from autovit_ray.search.actors import EvaluatorPool
    from autovit_ray.search.evaluate import EvalSettings
    from autovit_ray.train import main as train_main

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
        # the decoded digits reach the other nodes through the object store, not through their disks
        argv = tiny_train_argv(output_dir, "multinode", "xxs,xs,s", "ray.num_workers=1",
                               "ray.cpus_per_worker=1", "train.epochs=1", "ray.train_input=object-store")
        rc = train_main(argv)
        exp = Path(output_dir) / "multinode"
        summary = json.loads((exp / "train_summary.json").read_text())
        result: dict[str, Any] = {"nodes": nodes, "train_rc": rc, "train_summary": summary}
        checkpoint = find_checkpoint(exp, "xxs")
        pool = EvaluatorPool(str(checkpoint), 2, settings=EvalSettings(max_batches=1, calib_batches=1),
                             cpus_per_evaluator=0.5)
        _, space, _ = load_supernet(checkpoint)
        archs = [space.smallest(), space.sample(random.Random(1))]
        result["evaluations"] = [pool.evaluate(a) for a in archs]
        result["evaluator_stats"] = pool.stats()
        pool.shutdown()
        # an image folder's training split through Ray Data: read and decoded by tasks on the nodes the
        # trainer leaves free, streamed to its worker
        folder = write_image_folder(Path(output_dir) / "folder")
        rc = train_main(["--config", "imagenet", "--name", "raydata", "--output-dir", output_dir, "--supernets", "xxs",
                         *[a for item in (*TINY_TRAIN_SETTINGS, f"data.data_dir={folder}", "data.num_workers=0",
                                          "data.batch_size=4", "data.val_size=6", "data.calib_size=8",
                                          "data.resolution=16", "kd.kind=none", "train.epochs=1", "ray.num_workers=1",
                                          "ray.cpus_per_worker=1", "ray.train_input=ray-data")
                           for a in ("--set", item)]])
        raydata = Path(output_dir) / "raydata"
        result["ray_data"] = {"train_rc": rc, "summary": json.loads((raydata / "train_summary.json").read_text()),
                              "data_path": read_meta(find_checkpoint(raydata, "xxs"))["data_path"]}
        Path(result_path).write_text(json.dumps(result, indent=1, default=str))
        return 0
    finally:
        ray.shutdown()
        cluster.shutdown()


def _gpu_probe(config: dict[str, Any]) -> None:
    """A training worker that records where it runs and which GPU Ray gave it; never touches torch.cuda."""
    import ray
    import ray.train

    record = {"supernet": config["supernet"], "node_id": ray.get_runtime_context().get_node_id(),
              "gpu_ids": [str(i) for i in ray.get_gpu_ids()], "rank": ray.train.get_context().get_world_rank()}
    with open(config["log"], "a") as f:
        f.write(json.dumps(record) + "\n")


def gpu_cluster_main(output_dir: str, result_path: str) -> int:
    """A CPU head (1 CPU) and two nodes that declare 1 GPU and 2 CPUs each, on a machine without CUDA:
    the product plans two supernets' training on the live cluster (use_gpu 'auto'), TorchTrainers with
    the plan's ScalingConfig and gloo run a probe per worker, at the same time as the product runs them;
    then evaluator stubs started with the evaluator plan's resources report their nodes and GPUs."""
    from concurrent.futures import ThreadPoolExecutor

    import ray
    from ray.cluster_utils import Cluster
    from ray.train import RunConfig
    from ray.train.torch import TorchTrainer

    from autovit_ray import adapters, placement
    from autovit_ray.ray_train import plan_training, scaling_config, torch_backend
    from autovit_ray.training.config import load_config

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=2, num_gpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        head = ray.get_runtime_context().get_node_id()
        gpu_nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU")]
        cfg = load_config("digits", ["ray.num_workers=1", "ray.torch_backend=gloo"])
        nodes = adapters.cluster_node_groups()
        plan = plan_training(cfg, ["xxs", "xs"], nodes)
        log = Path(output_dir) / "probe.jsonl"
        log.parent.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(len(plan.supernets)) as pool:
            fits = [pool.submit(TorchTrainer(
                _gpu_probe, train_loop_config={"supernet": name, "log": str(log)},
                scaling_config=scaling_config(trainers), **torch_backend(cfg),
                run_config=RunConfig(name=name, storage_path=str(Path(output_dir) / "ray"))).fit)
                for name, trainers in plan.supernets.items()]
            for fit in fits:
                fit.result()
        evaluators = placement.plan_evaluators(2, 0.5, 0.5, nodes)

        @ray.remote
        class EvaluatorStub:
            def where(self) -> dict[str, Any]:
                return {"node_id": ray.get_runtime_context().get_node_id(),
                        "gpu_ids": [str(i) for i in ray.get_gpu_ids()]}

        stubs = [EvaluatorStub.options(num_cpus=evaluators.cpus, num_gpus=evaluators.gpus).remote()
                 for _ in range(evaluators.count)]
        result = {"head": head, "gpu_nodes": gpu_nodes, "plan": plan.to_json(),
                  "evaluator_plan": placement.make_plan(nodes, evaluators=evaluators).to_json(),
                  "workers": [json.loads(line) for line in log.read_text().splitlines()],
                  "evaluators": ray.get([stub.where.remote() for stub in stubs])}
        Path(result_path).write_text(json.dumps(result, indent=1))
        return 0
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    modes = {"multinode": multinode_main, "gpus": gpu_cluster_main}
    if len(sys.argv) == 4 and sys.argv[1] in modes:
        sys.exit(modes[sys.argv[1]](sys.argv[2], sys.argv[3]))
    sys.exit(f"usage: {sys.argv[0]} multinode|gpus <output dir> <result json>")
