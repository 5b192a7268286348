"""`python -m autovit_ray.space describe xxs [--json]`: describe AutoViT search spaces."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from autovit_ray.cli_exits import cli_main
from autovit_ray.config import add_renamed_flag
from autovit_ray.plan import describe_space
from autovit_ray.space import Arch, load_space


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m autovit_ray.space",
                                     description="Describe AutoViT search spaces.")
    sub = parser.add_subparsers(dest="command", required=True)
    describe = sub.add_parser("describe", help="space sizes, parameter/MAC ranges and choices")
    describe.add_argument("space", nargs="+", help="xxs, xs, s or a YAML path")
    describe.add_argument("--input-profile", default=None, help="input profile (default: the space's default)")
    add_renamed_flag(describe, "--profile", "--input-profile")
    describe.add_argument("--num-classes", type=int, default=1000)
    describe.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


@cli_main()
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    infos = [describe_space(load_space(name, input_profile=args.input_profile), args.num_classes) for name in args.space]
    if args.json:
        print(json.dumps(infos if len(infos) > 1 else infos[0], indent=2))
        return 0
    for info in infos:
        print(f"{info['name']} (input profile {info['input_profile']}, fingerprint {info['fingerprint']})")
        print(f"  subnets: constrained {info['size_constrained']:.3e}, "
              f"unconstrained {info['size_unconstrained']:.3e}")
        print(f"  params at {info['num_classes']} classes: {info['params_min'] / 1e6:.2f} M - "
              f"{info['params_max'] / 1e6:.2f} M")
        print(f"  MACs: {info['macs_min'] / 1e6:.0f} M - {info['macs_max'] / 1e6:.0f} M")
        for resolution, tokens in info["tokens_per_sequence"].items():
            print(f"  attention tokens per sequence at {resolution} px, transformer stages 1-4: {tokens}")
        print(f"  smallest: {Arch.from_dict(info['smallest'])}")
        print(f"  largest:  {Arch.from_dict(info['largest'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
