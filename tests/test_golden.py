"""Golden files: what checkpoints, latency tables and fingerprints already produced depend on.

`tests/golden/` holds, as small text files, the state-dict keys and shapes of every supernet and
of the static subnets of its corners and a random arch (the `.pth` files of searched models), the latency table's module keys of
every space, profile and resolution, and every space fingerprint. A refactor must leave them
identical: old checkpoints then load, old latency tables keep their keys and fingerprints match.

Regenerate only for a deliberate format change (and bump SPACE_FORMAT_VERSION):
    .venv/bin/python tests/test_golden.py
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from autovit_ray.space import BUILTIN_SPACES, load_space

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
NUM_CLASSES = 10
RANDOM_ARCHS = 1


def _state_dict_lines(module) -> list[str]:
    return [f"{name} {list(tensor.shape)}" for name, tensor in module.state_dict().items()]


def render_supernet_state_dicts() -> str:
    from autovit_ray.nn import Supernet

    lines: list[str] = []
    for name in BUILTIN_SPACES:
        lines.append(f"# supernet {name} num_classes={NUM_CLASSES}")
        lines += _state_dict_lines(Supernet(load_space(name), NUM_CLASSES))
    return "\n".join(lines) + "\n"


def _golden_archs(space):
    rng = random.Random(0)
    return [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(RANDOM_ARCHS)]


def render_subnet_state_dicts() -> str:
    from autovit_ray.models import create_subnet

    lines: list[str] = []
    for name in BUILTIN_SPACES:  # weights do not depend on the input profile
        space = load_space(name)
        for arch in _golden_archs(space):
            lines.append(f"# subnet {arch} num_classes={NUM_CLASSES}")
            lines += _state_dict_lines(create_subnet(arch, NUM_CLASSES, space))
    return "\n".join(lines) + "\n"


def render_lut_module_keys() -> str:
    from autovit_ray.latency.modules import arch_modules, enumerate_module_keys

    lines: list[str] = []
    for space in _every_space_and_profile():
        for resolution in space.resolutions:
            lines.append(f"# {space.name} {space.input_profile.name} r{resolution} num_classes=10: every module key")
            lines += enumerate_module_keys(space, resolution, 10)
        for arch in _golden_archs(space):
            lines.append(f"# {arch} num_classes=1000: its modules in forward order, with their "
                         "attribute paths in the static subnet")
            lines += [f"{key} {'.'.join(map(str, path))}" for key, path in arch_modules(arch, space, 1000)]
    return "\n".join(lines) + "\n"


def render_space_fingerprints() -> str:
    return "".join(f"{space.name} {space.input_profile.name} {space.fingerprint()}\n"
                   for space in _every_space_and_profile())


def _every_space_and_profile():
    for name in BUILTIN_SPACES:
        base = load_space(name)
        for profile in sorted(base.input_profiles):
            yield base.with_input_profile(profile)


RENDERERS = {
    "supernet_state_dicts.txt": render_supernet_state_dicts,
    "subnet_state_dicts.txt": render_subnet_state_dicts,
    "lut_module_keys.txt": render_lut_module_keys,
    "space_fingerprints.txt": render_space_fingerprints,
}


@pytest.mark.parametrize("filename", sorted(RENDERERS))
def test_matches_golden_file(filename: str) -> None:
    expected = (GOLDEN_DIR / filename).read_text()
    actual = RENDERERS[filename]()
    assert actual == expected, (f"{filename} changed: existing checkpoints, latency tables or "
                                "fingerprints would no longer match")


if __name__ == "__main__":
    GOLDEN_DIR.mkdir(exist_ok=True)
    for filename, render in RENDERERS.items():
        (GOLDEN_DIR / filename).write_text(render())
        print(f"wrote {GOLDEN_DIR / filename}", file=sys.stderr)
