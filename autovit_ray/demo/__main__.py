"""`make demo`: the main job on the embedded default data set (scikit-learn's handwritten digits).

It prints the three search spaces next to the paper's Table 1, then runs the whole pipeline of
configs/pipeline/demo.yaml (train -> profile -> search -> compare; see `autovit_ray.pipeline`).
Arguments are passed on to the pipeline, e.g. `make demo DEMO_ARGS="--set output_dir=/tmp/out"`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from autovit_ray.pipeline.cli import main as pipeline_main
from autovit_ray.plan import describe_space
from autovit_ray.space import BUILTIN_SPACES, load_space

PAPER_PARAMS = {"xxs": "1.0-1.8 M", "xs": "1.6-2.6 M", "s": "4.0-7.2 M"}


def describe_spaces() -> None:
    print("== search spaces (ImageNet-style input profile, 1000 classes) ==")
    print(f"{'space':5} {'constrained':>12} {'unconstrained':>14} {'params (ours)':>16} {'paper':>10}")
    for name in BUILTIN_SPACES:
        info = describe_space(load_space(name), 1000)
        params = f"{info['params_min'] / 1e6:.2f}-{info['params_max'] / 1e6:.2f} M"
        print(f"{name:5} {info['size_constrained']:12.2e} {info['size_unconstrained']:14.2e} "
              f"{params:>16} {PAPER_PARAMS[name]:>10}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" not in argv and "--help" not in argv:
        describe_spaces()
    if not any(a == "--config" or a.startswith("--config=") for a in argv):
        argv = ["--config", "demo", *argv]
    return pipeline_main(argv)


if __name__ == "__main__":
    sys.exit(main())
