"""Several processes write one SQLite tracking database (a pipeline has up to seven writers: the
trainers, the searches' drivers and trials): with `retry_locked`, none of their writes is lost."""

from __future__ import annotations

import subprocess
import sys

WRITER = """
import sys
from mlflow.entities import Metric
from autovit_ray.adapters import mlflow_client, retry_locked
from autovit_ray.tracking import experiment_id

uri, writer, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = mlflow_client(uri)
eid = retry_locked(lambda: experiment_id(client, uri, "concurrent"))
for i in range(runs):
    run = retry_locked(lambda: client.create_run(eid, tags={"writer": writer, "index": str(i)}))
    retry_locked(lambda: client.log_batch(run.info.run_id, metrics=[Metric("value", float(i), 0, step)
                                                                   for step in range(5)]))
    retry_locked(lambda: client.set_terminated(run.info.run_id, "FINISHED"))
"""


def test_concurrent_writers_lose_nothing(tmp_path):
    from autovit_ray.adapters import mlflow_client

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    writers, runs = 4, 8
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, uri, str(w), str(runs)], stderr=subprocess.PIPE,
                              text=True) for w in range(writers)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(errors)
    client = mlflow_client(uri)
    eid = client.get_experiment_by_name("concurrent").experiment_id
    found = client.search_runs([eid], max_results=1000)
    assert sorted((r.data.tags["writer"], int(r.data.tags["index"])) for r in found) == \
        [(str(w), i) for w in range(writers) for i in range(runs)]
    assert all(r.info.status == "FINISHED" for r in found)
    for r in found:
        history = client.get_metric_history(r.info.run_id, "value")
        assert sorted(m.step for m in history) == list(range(5))
        assert {m.value for m in history} == {float(r.data.tags["index"])}
