"""A persistent cache of subnet evaluations, so an arch is never evaluated twice on the same terms.

An entry is keyed by the hash of (the evaluation context, the arch, the split). The context is what an
evaluation's result depends on besides the arch: the supernet checkpoint's content hash, the data
(dataset, split digest, resolution, normalisation, ...) and the evaluation settings (batches, batch
size). Another checkpoint, another split seed or other settings give other keys, so their entries are
never reused. The store is one SQLite file (default `<experiment>/search/eval_cache.sqlite`), shared by
every search of an experiment (a resumed search, other strategies or seeds on the same supernet); the
trial processes of a search read and write it concurrently (SQLite's locking; on a multi-node cluster
the experiment directory must be on storage every node sees, as for checkpoints).

A hit returns the stored metrics, with `cached: True`; it still counts as one of the strategy's
evaluations (the search budget is candidates evaluated), the actors just do not run it. Pure Python.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..space import Arch

_SCHEMA = "CREATE TABLE IF NOT EXISTS evaluations (key TEXT PRIMARY KEY, context TEXT, arch_hash TEXT, " \
          "split TEXT, metrics TEXT)"


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (a checkpoint's state.pt: its weights and statistics)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


class EvalCache:
    """Evaluations of one context. Picklable (it holds the path and the context, and opens its SQLite
    connection in whichever process uses it), so Tune trials can share it through the actor pool."""

    def __init__(self, path: str | Path, context: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.context = json.dumps(dict(context), sort_keys=True, default=str)
        self.context_hash = hashlib.sha256(self.context.encode()).hexdigest()[:16]
        self._connection: sqlite3.Connection | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._connect()
        except sqlite3.DatabaseError as e:
            raise ValueError(f"evaluation cache {self.path} is not a readable SQLite file ({e}); "
                             "delete it or pass another --eval-cache") from None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "context": self.context, "context_hash": self.context_hash}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._connection = None

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            connection = sqlite3.connect(self.path, timeout=60.0)
            connection.execute(_SCHEMA)
            connection.commit()
            self._connection = connection
        return self._connection

    def key(self, arch: Arch, split: str) -> str:
        return hashlib.sha256(f"{self.context_hash}/{arch.arch_hash}/{split}".encode()).hexdigest()

    def get(self, arch: Arch, split: str) -> dict[str, Any] | None:
        row = self._connect().execute("SELECT metrics FROM evaluations WHERE key = ?",
                                      (self.key(arch, split),)).fetchone()
        return None if row is None else {**json.loads(row[0]), "cached": True}

    def put(self, arch: Arch, split: str, metrics: Mapping[str, Any]) -> None:
        stored = {k: v for k, v in metrics.items() if k != "cached"}
        connection = self._connect()
        with connection:  # one transaction: an entry is written whole or not at all
            connection.execute("INSERT OR REPLACE INTO evaluations VALUES (?, ?, ?, ?, ?)",
                               (self.key(arch, split), self.context_hash, arch.arch_hash, split,
                                json.dumps(stored, default=str)))

    def __len__(self) -> int:
        """Entries of this context."""
        return self._connect().execute("SELECT COUNT(*) FROM evaluations WHERE context = ?",
                                       (self.context_hash,)).fetchone()[0]


__all__ = ["EvalCache", "file_digest"]
