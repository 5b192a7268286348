"""The user's own extensions (docs/extending.md): modules named in `AUTOVIT_RAY_PLUGINS`.

A registration made in code exists only in the process that ran it; a run has many (the command, each Ray
worker and evaluator actor, a process serving a registered model). So a module that registers a dataset,
an input profile or a block kind (one its space's `block_kind_modules` does not name) is named in the
environment variable `AUTOVIT_RAY_PLUGINS` (comma-separated module names, importable on the PYTHONPATH),
and every process imports those modules on its first look-up in a registry. The workers of a local Ray
inherit the variable; on a cluster, set it (and PYTHONPATH) in the job's runtime environment.
"""

from __future__ import annotations

import importlib
import os

PLUGINS_ENV = "AUTOVIT_RAY_PLUGINS"
_imported: set[str] = set()


def plugin_modules() -> list[str]:
    return [name.strip() for name in os.environ.get(PLUGINS_ENV, "").split(",") if name.strip()]


def load_plugins() -> None:
    """Import each module of `AUTOVIT_RAY_PLUGINS` once per process (a module that registers and looks
    up while it is being imported is not imported again)."""
    for name in plugin_modules():
        if name in _imported:
            continue
        _imported.add(name)
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            _imported.discard(name)
            if e.name != name:
                raise
            raise ValueError(f"{PLUGINS_ENV} names module {name!r}, which is not on the Python path "
                             f"(PYTHONPATH): expected comma-separated importable module names") from None
        except BaseException:
            _imported.discard(name)
            raise


__all__ = ["PLUGINS_ENV", "load_plugins", "plugin_modules"]
