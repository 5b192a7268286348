"""What every benchmark driver shares: where artifacts live, which code ran, logging, product commands
and the records a driver writes.

Importing this module puts this checkout first on `sys.path`, so that a driver (`python
bench/<driver>.py`) runs the `autovit_ray` beside it (a pinned work tree's, not an editable install's),
and every product command it starts (`run_cli`: `python -m autovit_ray.<command>`, and the Ray workers
of that command) runs the same copy. A result then says which code that was: `code_identity()` (the
commit of the work tree and the package's path inside it) and `code_commit()`.

Paths a committed result records are public (`public_path`): `$AUTOVIT_BENCH_DIR/...` under the
benchmark folder, `<work tree name>/...` inside a checkout, never a path of the machine that ran it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import autovit_ray  # noqa: E402
from autovit_ray.io import atomic_path, atomic_write_text  # noqa: E402

T = TypeVar("T")

if TYPE_CHECKING:
    from torch import nn

    from autovit_ray.training.config import TrainConfig


def bench_dir() -> Path:
    """The benchmarks' artifact folder: $AUTOVIT_BENCH_DIR, default ~/.cache/autovit-ray/bench."""
    return Path(os.environ.get("AUTOVIT_BENCH_DIR", "~/.cache/autovit-ray/bench")).expanduser()


def cifar10_dir() -> str:
    """Where CIFAR-10 is: $AUTOVIT_CIFAR10_DIR, default data/cifar10."""
    return os.environ.get("AUTOVIT_CIFAR10_DIR", "data/cifar10")


def staged_parser(doc: str | None, name: str, stages: Sequence[str]) -> argparse.ArgumentParser:
    """The arguments of a driver that runs `stages` in order over its artifacts in $AUTOVIT_BENCH_DIR/<name>."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=bench_dir() / name)
    parser.add_argument("--data-dir", type=Path, default=Path(cifar10_dir()))
    parser.add_argument("--stop-after", choices=stages, default=stages[-1])
    parser.add_argument("--report-only", action="store_true", help="write the JSON and section from what exists")
    return parser


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------------------------------
# Public paths


def public_path(path: str | Path) -> str:
    """A path as a committed result records it, never a path of the machine that ran it: under the
    benchmark folder as `$AUTOVIT_BENCH_DIR/...`; a work tree (this checkout or a pinned copy beside it)
    as `<work tree name>/...`; anything else unchanged."""
    text = str(path)
    for base, prefix in ((bench_dir(), "$AUTOVIT_BENCH_DIR/"), (ROOT.parent, "")):
        base_text = str(base.resolve()) if base.exists() else str(base)
        for candidate in {base_text, str(base)}:
            if text.startswith(candidate + "/"):
                return prefix + text[len(candidate) + 1:]
    return text


def public_paths(value: Any) -> Any:
    """`public_path` applied to every absolute path string inside a JSON value (results written before it)."""
    if isinstance(value, dict):
        return {k: public_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [public_paths(v) for v in value]
    if isinstance(value, str) and value.startswith("/"):
        return public_path(value)
    return value


# ---------------------------------------------------------------------------------------------------
# Which code ran


def work_tree_commit(root: str | Path) -> str:
    """HEAD of the work tree at `root` ('?' when it is gone or not a git tree)."""
    found = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True) \
        if Path(root).is_dir() else None
    return found.stdout.strip() if found is not None and found.returncode == 0 else "?"


def package_root() -> Path:
    """The work tree of the `autovit_ray` this process imported (this checkout: see the module docstring)."""
    return Path(autovit_ray.__file__).resolve().parents[1]


def code_commit() -> str:
    """The commit of the imported package's work tree, with `-dirty` when its code (autovit_ray/, bench/)
    has uncommitted changes."""
    root = package_root()
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "autovit_ray", "bench"],
                           capture_output=True, text=True).stdout.strip()
    return work_tree_commit(root) + ("-dirty" if dirty else "")


def code_identity() -> dict[str, str]:
    """The code this process runs: the imported package (its path as `<work tree>/autovit_ray/...`), its
    work tree and that tree's commit."""
    root = package_root()
    return {"autovit_ray": public_path(autovit_ray.__file__), "root": public_path(root),
            "commit": work_tree_commit(root)}


def code_line(record: dict[str, Any]) -> str:
    """The code of every run that advanced a record's stages (`note_code`), in one sentence."""
    runs = record.get("code_runs") or []
    if not runs:
        return "Code: not recorded."
    return "Code that ran the stages: " + ", then ".join(
        f"commit {r.get('commit', '?')[:7]} (`{Path(r['root']).name}`)" for r in runs) + "."


def note_code(record: dict[str, Any]) -> None:
    """Add this process's code to `record["code_runs"]`, the code of every run that advanced stages (a
    run resumed over sessions may be another pinned commit); a report-only run does not call this.
    An older record's single `code` (no commit) becomes the first entry, its commit read from its tree."""
    if "code" in record:
        old = record.pop("code")
        record.setdefault("code_runs", []).insert(0, {**old, "commit": old.get("commit")
                                                      or work_tree_commit(old["root"])})
    runs = record.setdefault("code_runs", [])
    if code_identity() not in runs:
        runs.append(code_identity())


def environment() -> dict[str, Any]:
    """Package versions, and the code that wrote the report (which may differ from the runs' code)."""
    from importlib.metadata import version

    packages = {name: version(name) for name in ("torch", "timm", "ray", "mlflow", "numpy", "onnxruntime")}
    report = code_identity()
    return {"packages": packages, "python": sys.version.split()[0], "report_code_root": report["root"],
            "report_commit": report["commit"]}


# ---------------------------------------------------------------------------------------------------
# Product commands


def run_cli(args: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> None:
    """`python -m <args>` (a product command) from this checkout, its output appended to `log_path` after
    the command line; `env`: variables added to this process's. A failure names the command and the log."""
    cmd = [sys.executable, "-m", *args]
    # this copy of the code, also in the Ray workers the command starts (not an editable install's)
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    with open(log_path, "a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        rc = subprocess.call(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                             env={**os.environ, "PYTHONPATH": path, **(env or {})})
    if rc != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {rc}); see {log_path}")


def run_at_once(items: Sequence[T], call: Callable[[T], None], at_once: int) -> None:
    """`call(item)` for every item, in order, at most `at_once` at a time (threads; each call is meant
    to wait on a process of its own). After a failure no further item starts; the first failure is
    raised once the running ones have ended (each is resumable: a rerun goes on from there)."""
    import collections
    import threading

    pending = collections.deque(items)
    lock = threading.Lock()
    failures: list[BaseException] = []

    def worker() -> None:
        while True:
            with lock:
                if failures or not pending:
                    return
                item = pending.popleft()
            try:
                call(item)
            except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
                with lock:
                    failures.append(exc)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, min(at_once, len(items))))]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.5)  # short waits: Ctrl-C reaches the main thread between them
    if failures:
        raise failures[0]


def mlflow_env(out: Path) -> dict[str, str]:
    """The tracking store of a benchmark's product commands: a sqlite file in its artifact folder."""
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{out / 'mlflow.db'}"}


# ---------------------------------------------------------------------------------------------------
# Trainings and measurements


class Mismatch(ValueError):
    """A stage artifact made with other settings than this run's (another recipe, split, supernet...)."""


def recipe_fingerprint(cfg: TrainConfig) -> dict[str, Any]:
    """The parts of a config that make two trainings comparable (data split, augmentation, optimiser,
    schedule, epochs, seed); a resumed or reused artifact must match it."""
    d = cfg.to_dict()
    data = {k: v for k, v in d["data"].items() if k not in ("data_dir", "num_workers", "cache_dir",
                                                             "in_memory_limit_mb")}  # storage, not recipe
    return {"data": data, "optimizer": {k: v for k, v in d["optimizer"].items() if k != "freeze_inactive"},
            "schedule": d["schedule"], "epochs": d["train"]["epochs"], "seed": d["seed"],
            "grad_clip": d["train"]["grad_clip"]}


def measure(models: Sequence[nn.Module], backend: str, clock: str, rounds: int, repeats: int = 5,
            seed: int = 0, resolution: int = 32) -> list[dict[str, float]]:
    """LatencyStats (as dicts) per model on `backend`, batch 1 at `resolution` px (CIFAR's 32 by default),
    1 thread, `clock`, all in one run whose rounds interleave the models in random order."""
    from autovit_ray.latency import get_backend, measure_models

    runner = get_backend(backend, threads=1, clock=clock)
    shape = (1, 3, resolution, resolution)
    stats = measure_models(runner, [(m.eval(), shape) for m in models], rounds, repeats, seed, calibrate=True)
    return [s.to_dict() for s in stats]


SELECTION_CANDIDATES = 10  # a search's best models measured beside the peer


def selection_candidates(best: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The `SELECTION_CANDIDATES` best of a search's results.json `best` entries by validation top-1 (all
    fit its latency-table budget)."""
    return sorted(best, key=lambda b: -b["val_top1"])[:SELECTION_CANDIDATES]


def measured_selection(candidates: Sequence[dict[str, Any]], stats: Sequence[dict[str, float]],
                       factor: float) -> dict[str, Any]:
    """The selection rule fixed before looking: `stats` are the peer's then each candidate's, measured in
    one interleaved run; the chosen model is the best by validation top-1 whose measured median meets
    `factor` x the peer's (None when none does)."""
    if len(stats) != len(candidates) + 1:
        raise ValueError(f"expected the peer's and {len(candidates)} candidates' latencies, got {len(stats)}")
    limit = factor * stats[0]["median_ms"]
    rows = [{"arch": c["arch"], "name": c["name"], "val_top1": c["val_top1"], "lut_ms": c["latency_ms"],
             "measured": s, "meets": s["median_ms"] <= limit} for c, s in zip(candidates, stats[1:])]
    chosen = next((r for r in rows if r["meets"]), None)
    return {"peer_measured": stats[0], "limit_ms": limit, "candidates": rows,
            "chosen": chosen["arch"] if chosen else None}


# ---------------------------------------------------------------------------------------------------
# Records


def write_json(path: Path, data: Any, indent: int = 1) -> None:
    """`data` as JSON at `path`, atomically (a reader never sees half a file)."""
    atomic_write_text(path, json.dumps(data, indent=indent, default=str))


def readable_json(path: Path) -> bool:
    """Whether `path` holds JSON; a corrupt file is removed, so that its stage runs again."""
    try:
        json.loads(path.read_text())
        return True
    except FileNotFoundError:
        return False
    except (OSError, json.JSONDecodeError) as e:
        log(f"{path} is unreadable ({e}); running its stage again")
        path.unlink(missing_ok=True)
        return False


def open_record(path: Path, report_only: bool) -> tuple[dict[str, Any], Callable[[], None]]:
    """(a driver's record at `path`, the function that saves it atomically); a run that advances stages
    notes its code in it (`note_code`)."""
    record: dict[str, Any] = json.loads(path.read_text()) if readable_json(path) else {}
    if not report_only:
        note_code(record)

    def save() -> None:
        atomic_write_text(path, json.dumps(record, indent=1))

    return record, save


# A long run's small measured files, committed: a new machine starts without the artifacts folder.
KEPT = ROOT / "bench" / "results" / "kept"
KEPT_LIMIT_BYTES = 2 * 2**20  # nothing over a couple of MiB is committed


def keep_files(files: Mapping[str, Path]) -> list[str]:
    """Copy each artifact of `files` ({name under bench/results/kept: artifact}) that exists into
    bench/results/kept/<name>, to be committed with the report; returns the names copied. Only small
    records of measurements belong there (scores of finished runs, the latency table the run's band
    and draw came from), never checkpoints: ValueError for a file over `KEPT_LIMIT_BYTES`. A JSON file's
    absolute paths are kept as `public_paths` writes them (what the run reads back from it, its records and
    scores, holds no path it uses)."""
    kept = []
    for name, artifact in files.items():
        if not artifact.is_file():
            continue
        data = artifact.read_bytes()
        if artifact.suffix == ".json":  # a path of this machine inside (a run's config): kept as `public_path` says
            record = json.loads(data)
            if public_paths(record) != record:
                data = json.dumps(public_paths(record), indent=1).encode()
        if len(data) > KEPT_LIMIT_BYTES:
            raise ValueError(f"{public_path(artifact)} is {len(data):,} bytes: over the {KEPT_LIMIT_BYTES:,} bytes a "
                             "file kept in the repository may have")
        target = KEPT / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
        kept.append(name)
    return kept


def restore_files(files: Mapping[str, Path]) -> list[str]:
    """Put each kept file (`keep_files`) back where its artifact is missing, so that a run begun on another
    machine goes on from what it measured there instead of measuring again; an artifact that exists is
    never replaced. Returns the names restored."""
    restored = []
    for name, artifact in files.items():
        source = KEPT / name
        if artifact.exists() or not source.is_file():
            continue
        artifact.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(artifact) as tmp:
            tmp.write_bytes(source.read_bytes())
        restored.append(name)
    if restored:
        log(f"restored from bench/results/kept (measured on an earlier machine): {', '.join(restored)}")
    return restored


def save_figure(fig: Any, path: Path) -> Path:
    """Write a matplotlib figure atomically (the PNG committed beside BENCHMARKS.md) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path
