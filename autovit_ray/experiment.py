"""The layout of one experiment directory, `<output_dir>/<name>/`: the only code that spells a path
inside one. Pure (no Ray, no MLflow, no torch).

    <root>/
      config.yaml                        the resolved training config (train)
      train_summary.json                 per supernet: status, final checkpoint, MLflow run (train)
      checkpoints/<supernet>/epoch_N/    supernet checkpoints: meta.json + state.pt (train)
      arch_log/<supernet>/rank<r>.txt    with train.arch_log: the arch of every step
      spaces/<supernet>-<hash>.yaml      train --arch: the one-arch space it trains
      luts/<supernet>.parquet            latency tables (the pipeline's profile stage)
      search/<name>/results.json         one search: results, exports (search)
      search/eval_cache.sqlite           evaluations shared by the searches of this experiment
      tune/<name>-<identity>/            Tune's state of one search identity (resume)
      retrain/                           searched archs trained alone (the pipeline's retrain stage)
      references/<model>/                reference models trained by compare
      compare/compare.json, compare.png  the comparison (compare)
      fidelity/                          the rank-fidelity truth (fidelity, by default)
      pipeline/<stage>.json              the pipeline's stage records
      pipeline_summary.json, report.html the pipeline's summary and the report page
      mlflow.db                          the default tracking store

A few-shot supernet's folder (`python -m autovit_ray.fewshot`: fewshot.json naming its parts) is the
experiment of what is done with it: its searches, its MLflow store, its fidelity truth go inside it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

EVAL_CACHE_FILE = "eval_cache.sqlite"
TRACKING_DB = "mlflow.db"
SEARCH_RESULTS = "results.json"  # in a search's folder
COMPARE_JSON, COMPARE_PNG = "compare.json", "compare.png"  # in a comparison's folder
FEW_SHOT_FILE = "fewshot.json"  # in a few-shot supernet's folder


@dataclass(frozen=True)
class Experiment:
    """An experiment directory (it need not exist yet)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser())

    @classmethod
    def of_checkpoint(cls, checkpoint: str | os.PathLike[str]) -> Experiment:
        """The experiment of a supernet checkpoint `<root>/checkpoints/<supernet>/epoch_N` (or of its
        state file in that folder), or a few-shot supernet's folder itself."""
        path = Path(checkpoint).expanduser().resolve()
        if (path / FEW_SHOT_FILE).is_file():
            return cls(path)
        return cls((path if path.is_dir() or not path.suffix else path.parent).parents[2])

    # -- train --------------------------------------------------------------------------------
    @property
    def config_yaml(self) -> Path:
        return self.root / "config.yaml"

    @property
    def train_summary(self) -> Path:
        return self.root / "train_summary.json"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    def arch_log(self, supernet: str, rank: int) -> Path:
        """With `train.arch_log`: the arch each step of one rank trained."""
        return self.root / "arch_log" / supernet / f"rank{rank}.txt"

    def standalone_space(self, supernet: str, arch_hash: str) -> Path:
        """`train --arch`: the one-arch space the stand-alone run trains (its checkpoints' space source)."""
        return self.root.resolve() / "spaces" / f"{supernet}-{arch_hash}.yaml"

    def supernet_checkpoints(self, supernet: str) -> Path:
        return self.checkpoints_dir / supernet

    # -- profile ------------------------------------------------------------------------------
    @property
    def luts_dir(self) -> Path:
        return self.root / "luts"

    def lut(self, supernet: str) -> Path:
        return self.luts_dir / f"{supernet}.parquet"

    # -- search -------------------------------------------------------------------------------
    @property
    def searches_dir(self) -> Path:
        return self.root / "search"

    def search_dir(self, name: str) -> Path:
        return self.searches_dir / name

    def search_results(self, name: str) -> Path:
        return self.search_dir(name) / SEARCH_RESULTS

    def search_dirs(self) -> list[Path]:
        """The folders of the searches run here, by name."""
        return sorted(p for p in self.searches_dir.glob("*") if p.is_dir())

    @property
    def eval_cache(self) -> Path:
        return self.searches_dir / EVAL_CACHE_FILE

    def tune_dir(self, name: str, identity: str) -> Path:
        """Tune's folder of one search identity (absolute: Tune wants a storage path it can resolve)."""
        return self.root.resolve() / "tune" / f"{name}-{identity}"

    # -- retrain, compare, fidelity -----------------------------------------------------------
    @property
    def retrain_dir(self) -> Path:
        return self.root / "retrain"

    @property
    def references_dir(self) -> Path:
        return self.root / "references"

    @property
    def compare_dir(self) -> Path:
        return self.root / "compare"

    @property
    def compare_json(self) -> Path:
        return self.compare_dir / COMPARE_JSON

    @property
    def compare_png(self) -> Path:
        return self.compare_dir / COMPARE_PNG

    @property
    def fidelity_dir(self) -> Path:
        return self.root / "fidelity"

    # -- pipeline, report, tracking ------------------------------------------------------------
    @property
    def records_dir(self) -> Path:
        return self.root / "pipeline"

    @property
    def summary_json(self) -> Path:
        return self.root / "pipeline_summary.json"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def tracking_db(self) -> Path:
        return self.root / TRACKING_DB

    def markers(self) -> tuple[Path, ...]:
        """The parts of which any one makes a directory an experiment (of a pipeline, training or search)."""
        return (self.config_yaml, self.summary_json, self.checkpoints_dir, self.luts_dir, self.searches_dir,
                self.compare_dir, self.tracking_db)

    @property
    def tracking_uri(self) -> str:
        """The default tracking store of this experiment (when no server or $MLFLOW_TRACKING_URI is set)."""
        return f"sqlite:///{self.tracking_db.resolve()}"


__all__ = ["COMPARE_JSON", "COMPARE_PNG", "EVAL_CACHE_FILE", "FEW_SHOT_FILE", "SEARCH_RESULTS", "TRACKING_DB", "Experiment"]
