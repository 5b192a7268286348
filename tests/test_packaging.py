"""The wheel is the product: built and installed away from the checkout, it finds its own search
spaces and training configs (package data), and its CLIs run from any directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{args} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def test_the_wheel_carries_its_configs_and_runs_outside_the_checkout(tmp_path):
    dist, site, elsewhere = tmp_path / "dist", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(ROOT)], tmp_path)
    (wheel,) = dist.glob("autovit_ray-*.whl")
    _run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], tmp_path)
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = _run([sys.executable, "-c", "import autovit_ray; print(autovit_ray.__file__)"], elsewhere, env)
    assert Path(where.strip()).is_relative_to(site), where  # the installed copy, not the checkout
    described = _run([sys.executable, "-m", "autovit_ray.space", "describe", "xxs"], elsewhere, env)
    assert described.startswith("xxs (input profile imagenet")
    config = _run([sys.executable, "-m", "autovit_ray.train", "--config", "cifar10", "--print-config"], elsewhere, env)
    assert "name: cifar10" in config and "dataset: cifar10" in config
    pipeline = _run([sys.executable, "-m", "autovit_ray.pipeline", "--config", "demo", "--print-config"], elsewhere, env)
    assert pipeline.strip()
