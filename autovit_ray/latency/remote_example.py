"""An example `remote` timing command: load an ONNX model with onnxruntime, time it, print JSON.

    python -m autovit_ray.latency.remote_example MODEL.onnx --shape 1,3,256,256 --repeats 20

Prints one line: {"latencies_ms": [...], "device": {...}}. On a real device, run the same
contract there (e.g. over ssh or adb; see docs/latency.md): the host only needs the JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence

import numpy as np


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--shape", required=True, help="input shape, e.g. 1,3,256,256")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    shape = tuple(int(v) for v in args.shape.split(","))
    feed = {session.get_inputs()[0].name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    for _ in range(args.warmup):
        session.run(None, feed)
    latencies = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        session.run(None, feed)
        latencies.append((time.perf_counter() - start) * 1e3)
    device = {"os": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
              "runtime": f"onnxruntime {ort.__version__}", "threads": args.threads}
    print(json.dumps({"latencies_ms": latencies, "device": device}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
