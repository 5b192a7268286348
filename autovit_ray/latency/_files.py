"""Atomic file writes (shared with the rest of the package)."""

from autovit_ray.io import atomic_path

__all__ = ["atomic_path"]
