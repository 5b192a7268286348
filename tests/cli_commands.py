"""The package's command lines as the text shows them: shell blocks of README and docs/ split into
commands, and each `python -m autovit_ray.<cli>` command parsed by that CLI's own argument parser."""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Callable
from pathlib import Path

from autovit_ray.compare.cli import build_parser as compare_parser
from autovit_ray.export_cli import build_parser as export_parser
from autovit_ray.fewshot.cli import build_parser as fewshot_parser
from autovit_ray.fidelity.cli import build_parser as fidelity_parser
from autovit_ray.pipeline.cli import build_parser as pipeline_parser
from autovit_ray.profile import build_parser as profile_parser
from autovit_ray.report.cli import build_parser as report_parser
from autovit_ray.search.cli import build_parser as search_parser
from autovit_ray.space.__main__ import build_parser as space_parser
from autovit_ray.train import build_parser as train_parser

REPO = Path(__file__).resolve().parent.parent
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "autovit_ray.train": train_parser, "autovit_ray.profile": profile_parser,
    "autovit_ray.search": search_parser, "autovit_ray.export": export_parser,
    "autovit_ray.compare": compare_parser, "autovit_ray.pipeline": pipeline_parser,
    "autovit_ray.fidelity": fidelity_parser, "autovit_ray.fewshot": fewshot_parser,
    "autovit_ray.report": report_parser,
    "autovit_ray.space": space_parser}
# a placeholder the reader fills in (<N>, <hash>): any one value parses as well as another
PLACEHOLDER = re.compile(r"<[\w -]+>")


def bash_blocks(path: Path) -> list[str]:
    """The bodies of the file's ```bash blocks, in order."""
    return re.findall(r"^```bash\n(.*?)^```", path.read_text(), flags=re.S | re.M)


def commands(block: str) -> list[str]:
    """The block's commands: continuation lines joined, comment-only and blank lines dropped (trailing
    comments are left to bash)."""
    out, current = [], ""
    for line in block.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line
        if line.rstrip().endswith("\\"):
            current = current.rstrip()[:-1] + " "
        elif line.rstrip().endswith("|"):
            current += " "
        else:
            out.append(current.strip())
            current = ""
    assert not current, f"block ends inside a command: {current!r}"
    return out


def package_argv(command: str) -> tuple[str, list[str]] | None:
    """(module, its arguments) of a command that runs `python -m autovit_ray.<cli>` (after any
    launcher, e.g. `ray job submit ... --`); None for any other command."""
    argv = shlex.split(PLACEHOLDER.sub("1", command), comments=True)
    for i in range(len(argv) - 2):
        if Path(argv[i]).name in ("python", "python3") and argv[i + 1] == "-m" and argv[i + 2].startswith("autovit_ray"):
            return argv[i + 2], argv[i + 3:]
    return None


def parse(module: str, args: list[str]) -> argparse.Namespace:
    """Parse like the CLI does; one readable failure instead of argparse's SystemExit."""
    assert module in PARSERS, f"{module} has no parser in tests/cli_commands.py"
    try:
        return PARSERS[module]().parse_args(args)
    except SystemExit as exc:
        raise AssertionError(f"`python -m {module} {shlex.join(args)}` does not parse (exit {exc.code})") from None
