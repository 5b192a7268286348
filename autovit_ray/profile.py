"""Latency profiling CLI: build a lookup table, validate it against measurement, break a model down.

    python -m autovit_ray.profile build --supernet xxs --backend torch-cpu --resolution 256 --out lut.parquet
    python -m autovit_ray.profile validate --lut lut.parquet --samples 100 --seed 0 --out report/
    python -m autovit_ray.profile breakdown --supernet xxs --arch smallest --arch largest --out fig4.png

See docs/latency.md for the backends and how to profile a phone.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autovit_ray.cli_exits import cli_main
from autovit_ray.config import add_renamed_flag, parse_override

from .latency.build_config import BuildConfig
from .space import Arch, SearchSpace, load_space

_BUILD_DEFAULTS = BuildConfig()

# The backend flags' settings; a backend gets those that are its options (`LatencyBackend.options`), so a
# flag meant for another backend is ignored. Any other option: --backend-option NAME=VALUE.
BACKEND_FLAGS = ("threads", "clock", "compute_units", "command", "export_format")


def _resolutions(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise ValueError(f"--resolution takes integers like 256 or 128,192,256, got {text!r}") from None


def _quiet(args: argparse.Namespace) -> float | None:
    return None if args.quiet_cpus < 0 else args.quiet_cpus


def _backend_settings(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    """The options of `backend` given on the command line: its backend flags, then --backend-option."""
    from .latency import backend_class

    options = backend_class(backend).options()
    settings = {name: getattr(args, name) for name in BACKEND_FLAGS
                if name in options and getattr(args, name, None) is not None}
    for text in args.backend_option:
        try:
            settings.update([parse_override(text)])
        except ValueError:
            raise ValueError(f"--backend-option {text!r} is invalid: expected NAME=VALUE, e.g. threads=2 "
                             f"(the options of {backend!r}: {list(options)})") from None
    return settings


def _add_backend_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, help="torch-cpu / onnxruntime: compute threads (default 1)")
    p.add_argument("--clock", help="torch-cpu / onnxruntime: 'thread_cpu' (default, needs 1 thread) or 'wall'")
    p.add_argument("--compute-units", dest="compute_units", help="coreml: ALL, CPU_ONLY, CPU_AND_GPU, CPU_AND_NE")
    p.add_argument("--remote-command", dest="command",
                   help="remote: command template with {model} {shape} {repeats} {warmup}")
    p.add_argument("--export-format", dest="export_format", help="remote: onnx (default), coreml, torchscript")
    p.add_argument("--backend-option", action="append", default=[], metavar="NAME=VALUE",
                   help="any option of the backend (its constructor's parameters), e.g. warmup=10 (repeatable)")
    p.add_argument("--quiet-cpus", type=float, default=0.3,
                   help="keep timing rounds in which other processes used at most this many cores (negative: off)")
    p.add_argument("--quiet-wait", type=float, default=60.0,
                   help="seconds to wait before each round for other processes to go quiet (after a wait "
                        "runs out, at most 5 s until a round begins quiet again)")


def _parse_arch(text: str, space: SearchSpace, resolution: int | None) -> tuple[str, Arch]:
    if text in ("smallest", "largest"):
        arch = space.smallest() if text == "smallest" else space.largest()
        label = f"{space.name} {text}"
    else:
        path = Path(text)
        source = path.read_text() if path.suffix == ".json" and path.is_file() else text
        try:
            arch = Arch.from_json(source)
        except ValueError as e:
            raise ValueError(f"--arch {text!r} is not an arch: expected 'smallest', 'largest', an arch's JSON "
                             f"or a .json file holding one ({e})") from None
        label = str(arch)
    if resolution is not None:
        arch = dataclasses.replace(arch, resolution=resolution)
    space.validate(arch)
    return f"{label} @{arch.resolution}px", arch


def cmd_build(args: argparse.Namespace) -> int:
    from .latency import build_table, get_backend

    space = load_space(args.supernet, input_profile=args.input_profile)
    backend = get_backend(args.backend, **_backend_settings(args, args.backend))
    config = BuildConfig(rounds=args.rounds, repeats=args.repeats, references=args.references, seed=args.seed,
                         quiet_cpus=_quiet(args), quiet_wait_s=args.quiet_wait)
    print(f"building the {space.name} latency table on {backend.name} at {_resolutions(args.resolution) or list(space.resolutions)} px")
    table = build_table(space, backend, _resolutions(args.resolution), args.num_classes, config)
    path = table.save(args.out)
    print(f"wrote {path} ({table})")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .latency import LatencyTable, backend_from_settings, validate_table, write_report

    space = load_space(args.supernet, input_profile=args.input_profile) if args.supernet else None
    table = LatencyTable.load(args.lut, space=space)
    backend = backend_from_settings(table.backend, table.backend_settings, **_backend_settings(args, table.backend))
    if table.device.get("cpu_model") not in (None, backend.fingerprint().get("cpu_model")):
        print(f"warning: the table was measured on {table.device.get('cpu_model')!r}, this is "
              f"{backend.fingerprint().get('cpu_model')!r}", file=sys.stderr)
    report = validate_table(table, backend, samples=args.samples, seed=args.seed, rounds=args.rounds,
                            repeats=args.repeats, spread=args.spread, resolutions=_resolutions(args.resolution),
                            quiet_cpus=_quiet(args), quiet_wait_s=args.quiet_wait)
    out = Path(args.out) if args.out else Path(args.lut).with_suffix("").parent / (Path(args.lut).stem + "_validation")
    paths = write_report(report, out)
    print(report.summary())
    print(f"wrote {paths['json']} and {paths['png']}")
    return 0


def cmd_breakdown(args: argparse.Namespace) -> int:
    from .latency.breakdown import breakdown_chart, operator_breakdown, write_breakdown_json
    from .nn import Supernet

    space = load_space(args.supernet, input_profile=args.input_profile)
    archs = [_parse_arch(text, space, args.resolution) for text in (args.arch or ["smallest", "largest"])]
    supernet = Supernet(space, args.num_classes).eval()
    results = []
    for label, arch in archs:
        result = operator_breakdown(supernet.get_active_subnet(arch), arch.resolution, args.iterations,
                                    threads=args.threads)
        results.append((label, result))
        print(f"{label}: " + "  ".join(f"{k} {v:.2f} ms" for k, v in result.items()))
    png = breakdown_chart(results, args.out)
    write_breakdown_json(results, Path(args.out).with_suffix(".json"))
    print(f"wrote {png} and {Path(args.out).with_suffix('.json')}")
    return 0


def _add_input_profile_flag(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--input-profile", default=None, help=text)
    add_renamed_flag(parser, "--profile", "--input-profile")  # its name before 'profile' meant only timing


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m autovit_ray.profile",
                                     description="Latency lookup tables: build, validate, break down.")
    sub = parser.add_subparsers(dest="command_name", required=True)

    b = sub.add_parser("build", help="profile every module of a supernet into a Parquet table")
    b.add_argument("--supernet", required=True, help="xxs, xs, s or a space YAML")
    _add_input_profile_flag(b, "input profile (default: the space's, e.g. imagenet)")
    b.add_argument("--backend", default="torch-cpu",
                   help="torch-cpu, onnxruntime, coreml, remote, or one registered by a plugin (docs/extending.md)")
    b.add_argument("--resolution", default=None, help="e.g. 256 or 128,192,256 (default: all of the profile)")
    b.add_argument("--out", required=True, help="the .parquet file to write")
    b.add_argument("--num-classes", type=int, default=1000)
    b.add_argument("--rounds", type=int, default=_BUILD_DEFAULTS.rounds)
    b.add_argument("--repeats", type=int, default=_BUILD_DEFAULTS.repeats)
    b.add_argument("--references", type=int, default=_BUILD_DEFAULTS.references,
                   help="random reference archs per resolution (besides the module witnesses)")
    b.add_argument("--seed", type=int, default=0)
    _add_backend_flags(b)
    b.set_defaults(func=cmd_build)

    v = sub.add_parser("validate", help="predicted vs measured latency on fresh random subnets")
    v.add_argument("--lut", required=True)
    v.add_argument("--supernet", default=None, help="check the table against this space (optional)")
    _add_input_profile_flag(v, "input profile of --supernet (default: the space's)")
    v.add_argument("--samples", type=int, default=100)
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--rounds", type=int, default=8)
    v.add_argument("--repeats", type=int, default=1)
    v.add_argument("--resolution", default=None, help="validate at these resolutions only")
    v.add_argument("--spread", action="store_true", help="archs spread from smallest to largest by MACs")
    v.add_argument("--out", default=None, help="report folder (default: <lut>_validation/ next to the table)")
    _add_backend_flags(v)
    v.set_defaults(func=cmd_validate)

    k = sub.add_parser("breakdown", help="per-operator latency (attention, MLP, conv, norm, other) as a bar chart")
    k.add_argument("--supernet", required=True)
    _add_input_profile_flag(k, "input profile (default: the space's, e.g. imagenet)")
    k.add_argument("--arch", action="append", help="arch JSON, a .json file, 'smallest' or 'largest' (repeatable)")
    k.add_argument("--resolution", type=int, default=None, help="override the archs' resolution")
    k.add_argument("--num-classes", type=int, default=1000)
    k.add_argument("--iterations", type=int, default=10)
    k.add_argument("--threads", type=int, default=1)
    k.add_argument("--out", default="outputs/latency_breakdown.png")
    k.set_defaults(func=cmd_breakdown)
    return parser


@cli_main()
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
