"""The worked examples of docs/extending.md, as their tests run them: the fenced blocks of one section,
and a plugin installed the way pip would (its module and a `.dist-info` declaring its entry points, in
a folder on `sys.path`), without pip."""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autovit_ray.extensions import Registry

EXTENDING = Path(__file__).resolve().parent.parent / "docs" / "extending.md"


def section(heading: str) -> str:
    """The text of the `## heading` section of docs/extending.md."""
    text = EXTENDING.read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def blocks(heading: str, language: str) -> list[str]:
    """The bodies of the section's ```<language> blocks, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", section(heading), flags=re.S | re.M)


def entry_points(toml_block: str) -> tuple[str, dict[str, str]]:
    """(group, {name: "module:attribute"}) of a pyproject.toml `[project.entry-points."group"]` table."""
    group = re.search(r'^\[project\.entry-points\."([^"]+)"\]$', toml_block, flags=re.M)
    assert group, f"no entry-point table in {toml_block!r}"
    return group.group(1), dict(re.findall(r'^([\w.-]+) = "([^"]+)"$', toml_block, flags=re.M))


@contextlib.contextmanager
def installed(site: Path, source: str, toml_block: str, registry: Registry[Any]) -> Iterator[tuple[str, str]]:
    """A plugin of `registry` installed under `site` (on `sys.path` inside the block): the module its one
    entry point names, holding `source`, and a distribution declaring that entry point. Yields (entry-point
    name, module name); on exit the name leaves the registry if the module was imported (it registered
    itself), the module is forgotten and `site` leaves sys.path."""
    group, points = entry_points(toml_block)
    assert group == registry.entry_point_group and len(points) == 1, (group, points)
    (name, target), = points.items()
    module = target.partition(":")[0]
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(source)
    info = site / f"{module.replace('_', '-')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{name} = {target}\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(site))
        try:
            yield name, module
        finally:
            if sys.modules.pop(module, None) is not None:
                registry.unregister(name)
