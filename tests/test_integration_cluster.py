"""Integration tests: a real Ray head with token auth and `ray job submit`, and a simulated
multi-node cluster (`ray.cluster_utils.Cluster`) over which the trainers and evaluator actors spread.
The head runs the `ray start` line of cluster/autovit-cluster.yaml, so the two cannot drift.

Run apart from the unit suite: `pytest -m integration`. Each test starts its own Ray under its own
temp dir and ports, and stops exactly the processes it started (never `ray stop`)."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from integration_utils import (
    PYTHON,
    RAY_BIN,
    REPO,
    RayTemp,
    free_port_range,
    free_ports,
    mlflow_runs,
    tail,
    tiny_train_argv,
    wait_for,
)
from test_cluster_files import LAUNCHER, load, ray_start_line

pytestmark = pytest.mark.integration


def _http_status(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return 0


def _job_status(ray_env: dict[str, str], address: str, job_id: str) -> str:
    out = subprocess.run([RAY_BIN, "job", "status", "--address", address, job_id], env=ray_env,
                         capture_output=True, text=True, timeout=120)
    return out.stdout + out.stderr


# Options of the launcher file's head `ray start` line that this test leaves out: `ray up` writes
# ~/ray_bootstrap_config.yaml on a launched head (for its autoscaler); this head has no cloud to scale in.
LAUNCHER_ONLY_OPTIONS = {"--autoscaling-config"}


def _launcher_head_start(own: dict[str, str | None]) -> tuple[dict[str, str], list[str]]:
    """The head `ray start` line of cluster/autovit-cluster.yaml (never its `ray stop`): (its environment
    assignments, argv). Every option of the file is kept as written except those `own` replaces (this
    test's loopback ports, temp dir, dashboard host, ...) and LAUNCHER_ONLY_OPTIONS; `own` is appended."""
    env, options = ray_start_line(load(LAUNCHER)["head_start_ray_commands"])
    assert ("--head", None) in options, options
    argv = [RAY_BIN, "start"]
    for name, value in options:
        if name not in own and name not in LAUNCHER_ONLY_OPTIONS:
            argv.append(name if value is None else f"{name}={value}")
    for name, value in own.items():
        argv += [name] if value is None else [name, value]
    return env, argv


def _start_head(temp: RayTemp, token: str, tmp_path: Path, attempts: int = 3):
    """The launcher file's head `ray start` line, with `--block` and its own loopback ports and temp dir,
    its environment assignments (RAY_AUTH_MODE=token) and the token; (process, job API address).

    Ray waits a fixed 30 s for the raylet to register with the GCS; on a loaded 2-core machine that
    can run out, and `ray start` exits: then the attempt is stopped (by PID) and retried on new ports."""
    for attempt in range(1, attempts + 1):
        (gcs, dashboard, client, node_manager, object_manager, agent_listen, agent_grpc, metrics,
         runtime_env_agent) = ports = free_ports(9)
        lo, hi = free_port_range(40, avoid=ports)
        own = {
            "--block": None, "--node-ip-address": "127.0.0.1", "--port": gcs, "--temp-dir": str(temp.path),
            "--num-cpus": "2", "--num-gpus": "0", "--include-dashboard": "true",
            "--dashboard-host": "127.0.0.1", "--dashboard-port": dashboard, "--ray-client-server-port": client,
            "--node-manager-port": node_manager, "--object-manager-port": object_manager,
            "--dashboard-agent-listen-port": agent_listen, "--dashboard-agent-grpc-port": agent_grpc,
            "--metrics-export-port": metrics, "--runtime-env-agent-port": runtime_env_agent,
            "--min-worker-port": lo, "--max-worker-port": hi,
            "--object-store-memory": str(200 * 1024 * 1024), "--disable-usage-stats": None,
        }
        launcher_env, argv = _launcher_head_start({k: None if v is None else str(v) for k, v in own.items()})
        # Token auth comes from the file's line only (RAY_AUTH_MODE), the token from RAY_AUTH_TOKEN
        # (on a launched node: ~/.ray/auth_token, copied there by file_mounts).
        head_env = temp.env(RAY_AUTH_TOKEN=token)
        head_env.pop("RAY_AUTH_MODE", None)
        head_env.update(launcher_env)
        log = tmp_path / f"head-{attempt}.log"
        log.write_text(f"$ {' '.join(argv)}\n")
        head = temp.spawn(argv, log, env=head_env)
        address = f"http://127.0.0.1:{dashboard}"
        try:
            wait_for(lambda log=log: "Ray runtime started" in tail(log, 100_000), 240, "`ray start --head`",
                     alive=head)
        except AssertionError:
            if attempt == attempts or "timed out during startup" not in tail(log):
                raise AssertionError(f"ray start --head failed:\n{tail(log)}") from None
            temp.stop_all()
            continue
        url = f"{address}/api/version"
        wait_for(lambda url=url: _http_status(url, token) == 200, 120, "the job API", alive=head)
        return head, address
    raise AssertionError("unreachable")


def _submit(temp: RayTemp, ray_env: dict[str, str], address: str, job_id: str, module_argv: list[str],
            log: Path, timeout: float) -> str:
    """`ray job submit` (blocking, logs followed) of `<venv python> -m ...`; the final `ray job status`."""
    runtime_env = {"excludes": [".git", ".venv", "outputs", "mlruns", "*.egg-info", "__pycache__",
                                ".pytest_cache", ".ruff_cache", ".mypy_cache", ".hypothesis"]}
    cmd = [RAY_BIN, "job", "submit", "--address", address, "--submission-id", job_id,
           "--working-dir", str(REPO), "--runtime-env-json", json.dumps(runtime_env),
           "--", PYTHON, *module_argv]
    for attempt in range(1, 11):
        attempt_log = log.with_name(f"{log.stem}-{attempt}{log.suffix}")
        rc = temp.run(cmd, attempt_log, timeout=timeout, env=ray_env)
        # The head's job agent registers a little after `ray start` returns; the job was not created.
        if rc == 0 or "No available agent" not in tail(attempt_log):
            break
        time.sleep(5)
    log = attempt_log
    status = _job_status(ray_env, address, job_id)
    assert rc == 0 and f"Job '{job_id}' succeeded" in status, f"job {job_id}: rc {rc}, status {status}\n{tail(log)}"
    # The same through the job REST API (with the token).
    request = urllib.request.Request(f"{address}/api/jobs/{job_id}")
    request.add_header("Authorization", f"Bearer {ray_env['RAY_AUTH_TOKEN']}")
    with urllib.request.urlopen(request, timeout=30) as response:
        info = json.loads(response.read())
    assert info["status"] == "SUCCEEDED" and info["entrypoint"].startswith(PYTHON), info
    return status


def test_real_head_token_auth_job_submit_train_and_search(tmp_path):
    """The launcher file's head `ray start` line (token auth from the file; 127.0.0.1, own ports and temp
    dir), then train and search submitted with `ray job submit --working-dir`; both jobs succeed, outputs
    and MLflow runs exist; teardown stops exactly the processes of this head, by PID."""
    start = time.monotonic()
    with RayTemp() as temp:
        # The token: generated by `ray get-auth-token --generate` into a private home (never touches
        # ~/.ray/auth_token), then handed to every process as RAY_AUTH_TOKEN.
        home = temp.path / "home"
        home.mkdir()
        token = subprocess.run([RAY_BIN, "get-auth-token", "--generate"], env=temp.env(HOME=str(home)),
                               capture_output=True, text=True, timeout=120, check=True).stdout.strip()
        assert len(token) >= 16 and (home / ".ray" / "auth_token").read_text().strip() == token
        ray_env = temp.env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)

        head, address = _start_head(temp, token, tmp_path)
        # Token auth is on: the job API refuses a request without the token.
        assert _http_status(f"{address}/api/jobs/") in (401, 403)
        assert _http_status(f"{address}/api/jobs/", token) == 200

        out = tmp_path / "out"  # absolute: the job runs in a copy of the working dir
        train_argv = ["-m", "autovit_ray.train", *tiny_train_argv(out, "cluster", "xxs")]
        _submit(temp, ray_env, address, "avr-train", train_argv, tmp_path / "train-job.log", 420)
        exp = out / "cluster"
        summary = json.loads((exp / "train_summary.json").read_text())
        assert summary["xxs"]["status"] == "OK" and summary["xxs"]["epoch"] == 2
        assert (exp / "checkpoints" / "xxs" / "epoch_0002" / "state.pt").is_file()

        search_argv = ["-m", "autovit_ray.search", "--checkpoint", str(exp), "--supernet", "xxs",
                       "--params-budget", "10M", "--strategy", "random", "--max-evaluations", "4",
                       "--evaluators", "1", "--cpus-per-evaluator", "0.5", "--eval-batches", "1",
                       "--calib-batches", "1", "--top-k", "1", "--export-formats", "torchscript",
                       "--name", "cluster-search"]
        _submit(temp, ray_env, address, "avr-search", search_argv, tmp_path / "search-job.log", 420)
        results = json.loads((exp / "search" / "cluster-search" / "results.json").read_text())
        assert results["evaluations"] == 4 and results["failed"] == 0
        assert Path(results["best"][0]["exports"]["torchscript"]).is_file()

        logs = subprocess.run([RAY_BIN, "job", "logs", "--address", address, "avr-search"], env=ray_env,
                              capture_output=True, text=True, timeout=120).stdout
        assert "Best models" in logs

        # MLflow: the training run of xxs and the search's parent run with a child per candidate.
        train_runs = mlflow_runs(exp / "mlflow.db", "cluster")
        assert [r.info.run_name for r in train_runs] == ["xxs"] and train_runs[0].info.status == "FINISHED"
        assert "val_top1_smallest" in train_runs[0].data.metrics
        searches = mlflow_runs(exp / "mlflow.db", "autovit-search", "tags.role = 'search'")
        assert len(searches) == 1 and searches[0].info.status == "FINISHED"
        children = mlflow_runs(exp / "mlflow.db", "autovit-search", "tags.role = 'candidate'")
        assert len(children) == 4 and len({c.data.tags["arch_hash"] for c in children}) == 4

        # Teardown by PID: SIGTERM to `ray start --block`'s group stops the head it started.
        temp.stop_all()
        assert head.poll() is not None
    assert not temp.leftover, f"Ray processes left running: {temp.leftover}"
    assert not temp.path.exists()
    print(f"real head test: {time.monotonic() - start:.0f} s; stopped by PID after the head's process group: "
          f"{sorted(cmd.split()[0] for cmd in temp.stragglers.values())}")


def _simulated_cluster_driver(mode: str, tmp_path: Path) -> dict:
    """Run integration_utils.py's `mode` driver (a `ray.cluster_utils.Cluster` in a subprocess, so that it
    never meets the session's Ray); its result JSON. Nothing of Ray may be left running after it."""
    with RayTemp() as temp:
        result_path = tmp_path / f"{mode}.json"
        log = tmp_path / f"{mode}.log"
        rc = temp.run([PYTHON, REPO / "tests" / "integration_utils.py", mode, tmp_path / "out", result_path],
                      log, timeout=600)
        assert rc == 0, tail(log)
        result = json.loads(result_path.read_text())
    assert not temp.leftover, f"Ray processes left running: {temp.leftover}"
    return result


def test_simulated_multinode_spreads_trainers_and_evaluators(tmp_path):
    """3 logical nodes of 1 CPU (`ray.cluster_utils.Cluster`, in a subprocess so that it never meets the
    session's Ray): the three trainers (one 1-CPU worker each, their data from the object store) run on
    three different nodes and finish; the two evaluator actors (SPREAD) run on two different nodes and
    evaluate; then a supernet trains on an image folder streamed through Ray Data."""
    result = _simulated_cluster_driver("multinode", tmp_path)
    assert len(set(result["nodes"])) == 3
    assert result["train_rc"] == 0
    summary = result["train_summary"]
    assert {s: summary[s]["status"] for s in ("xxs", "xs", "s")} == {"xxs": "OK", "xs": "OK", "s": "OK"}
    trainer_nodes = [summary[s]["worker"]["node_id"] for s in ("xxs", "xs", "s")]
    assert len(set(trainer_nodes)) == 3 and set(trainer_nodes) <= set(result["nodes"]), trainer_nodes
    evaluator_nodes = [s["node_id"] for s in result["evaluator_stats"]]
    assert len(set(evaluator_nodes)) == 2, evaluator_nodes
    assert [e["split"] for e in result["evaluations"]] == ["val", "val"]
    assert all(0.0 <= e["val_top1"] <= 100.0 for e in result["evaluations"])
    # an image folder through Ray Data (ray.train_input=ray-data): trained, and recorded as such
    ray_data = result["ray_data"]
    assert ray_data["train_rc"] == 0 and ray_data["summary"]["xxs"]["status"] == "OK", ray_data
    assert ray_data["data_path"] == "ray-data"
    assert ray_data["summary"]["xxs"]["metrics"]["global_step"] == 2.0  # max_steps_per_epoch: 2 of the 4 steps (18 // 4)


def test_simulated_gpu_cluster_places_trainers_and_evaluators_on_gpu_nodes(tmp_path):
    """No CUDA here: two nodes that declare one GPU each. The plan (use_gpu 'auto', from the live
    cluster) gives each supernet's worker a whole GPU node and never the CPU head; Ray Train starts
    the workers there with gloo, and Ray hands each its GPU; evaluators of half a GPU share them."""
    result = _simulated_cluster_driver("gpus", tmp_path)
    worker = {"workers": 1, "cpus_per_worker": 2.0, "gpus_per_worker": 1.0, "torch_threads": 2}
    assert result["plan"] == {"supernets": {"xxs": worker, "xs": worker}, "evaluators": None,
                              "fits": {"now": True, "max": True}}
    workers = result["workers"]
    assert sorted(w["supernet"] for w in workers) == ["xs", "xxs"]
    assert sorted(w["node_id"] for w in workers) == sorted(result["gpu_nodes"])  # one per GPU node
    assert all(len(w["gpu_ids"]) == 1 for w in workers)
    assert result["evaluator_plan"]["evaluators"] == {"count": 2, "cpus": 0.5, "gpus": 0.5}
    assert all(e["node_id"] in result["gpu_nodes"] and len(e["gpu_ids"]) == 1 for e in result["evaluators"])
