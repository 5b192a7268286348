"""`python -m autovit_ray.fewshot`: name the trained parts of a few-shot supernet in one folder
(autovit_ray/fewshot/, whose module doc gives the whole workflow). A thin shim: nothing imports it but
`__main__.py`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .. import fewshot
from ..cli_exits import cli_main


def _part(text: str) -> tuple[int, str]:
    count, sep, checkpoint = text.partition("=")
    if not sep or not count.strip().isdigit() or not checkpoint:
        raise argparse.ArgumentTypeError(f"expected COUNT=CHECKPOINT (e.g. 3=runs/xxs-t3), got {text!r}")
    return int(count), checkpoint


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m autovit_ray.fewshot", description=fewshot.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="the few-shot folder to write (fewshot.json)")
    p.add_argument("--part", type=_part, action="append", required=True, metavar="COUNT=CHECKPOINT",
                   help="the part trained with train.transformer_stages=COUNT: a checkpoint, or an experiment "
                        "folder with --supernet; once per transformer stage count of the space")
    p.add_argument("--supernet", default=None, help="xxs, xs or s, for experiment folders")
    return p


@cli_main()
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..checkpoint import resolve_checkpoint, write_few_shot  # after parsing: --help imports no torch

    counts = [count for count, _ in args.part]
    if len(set(counts)) != len(counts):
        raise ValueError(f"--part names transformer stage counts {counts}: give each count once")
    parts = {count: resolve_checkpoint(checkpoint, args.supernet) for count, checkpoint in args.part}
    path = write_few_shot(args.out, parts)
    print(f"wrote {path}: {len(parts)} parts; give {args.out} as the supernet checkpoint to search, export "
          "or fidelity")
    return 0
