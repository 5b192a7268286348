"""Every CLI answers --help and a bad flag at once: without importing torch, timm, Ray or MLflow
(seconds of imports before a usage line). Checked in a fresh interpreter, by what it imported."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "timm", "ray", "mlflow")
CLIS = ("train", "search", "profile", "export", "compare", "fidelity", "fewshot", "pipeline", "demo", "space",
        "report")
# run `python -m <module> <args>` in this interpreter, then report the exit code and what was imported
PROBE = """
import runpy, sys
module, sys.argv = sys.argv[1], ["cli", *sys.argv[2:]]
try:
    runpy.run_module(module, run_name="__main__")
    code = 0
except SystemExit as e:
    code = e.code
print("EXIT", code, "HEAVY", ",".join(m for m in {heavy!r} if m in sys.modules))
"""


def _probe(module: str, *args: str) -> tuple[str, str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), module, *args],
                         capture_output=True, text=True, timeout=120)
    last = [line for line in out.stdout.splitlines() if line.startswith("EXIT")]
    assert last, out.stdout + out.stderr
    _, exit_code, _, heavy = (last[-1].split(" ") + [""])[:4]
    return exit_code, heavy


@pytest.mark.parametrize("cli", CLIS)
def test_help_and_bad_flags_import_nothing_heavy(cli):
    exit_code, heavy = _probe(f"autovit_ray.{cli}", "--help")
    assert exit_code == "0" and heavy == "", f"{cli} --help imported {heavy}"
    exit_code, heavy = _probe(f"autovit_ray.{cli}", "--no-such-flag")
    assert exit_code == "2" and heavy == "", f"{cli} with a bad flag imported {heavy}"
