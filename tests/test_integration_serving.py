"""`mlflow models serve` on a registered searched model's champion, offline on 127.0.0.1.

Starts the server on a free port (its own process group), sends the logged input example's shape of
data to /invocations, compares the logits with the torch model, and stops what it started by PID.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from autovit_ray.registry import CHAMPION, register

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_serve_the_champion_and_query_it(registered_digits_model, tmp_path):
    logged = registered_digits_model
    name = "autovit-serving-xxs"
    register(logged["uri"], name, logged["uris"]["pyfunc"], logged["runs"][0], logged["facts"])
    port = _free_port()
    # the server execs `uvicorn` from PATH: the venv's bin directory must be on it (as when activated)
    env = {**os.environ, "MLFLOW_TRACKING_URI": logged["uri"],
           "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{name}@{CHAMPION}",
           "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            assert server.poll() is None, f"the server exited: {(tmp_path / 'serve.log').read_text()[-2000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError):
                assert time.time() < deadline, "the server did not answer /ping within 120 s"
                time.sleep(1)
        x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
        answer = _post(f"http://127.0.0.1:{port}/invocations", {"inputs": x.numpy().tolist()})
        with torch.no_grad():
            expected = logged["model"](x).numpy()
        got = np.asarray(answer["predictions"], dtype=np.float32)
        assert got.shape == (3, 10) and np.abs(got - expected).max() <= 1e-4
        with pytest.raises(urllib.error.HTTPError):  # a wrong image size is refused by the signature
            _post(f"http://127.0.0.1:{port}/invocations", {"inputs": np.zeros((1, 3, 16, 16)).tolist()})
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server's own group: gunicorn/uvicorn and its workers
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
