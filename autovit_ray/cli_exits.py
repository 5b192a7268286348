"""How every command line ends: one line a user reads, and the exit status scripts test.

- bad input (a `ValueError`, or an error class the command names): `error: <what was wrong, what was
  expected>` on stderr, exit status 2, no traceback;
- a check that ran and failed (e.g. an export whose outputs do not match the model): `error: ...`, 1;
- Ctrl-C: `interrupted: <what is kept>`, exit status 130; an `Interrupted` (a search stopped by
  Ctrl-C, which says how far it got and how to resume) prints its own message alone.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

Main = TypeVar("Main", bound=Callable[..., int])


class Interrupted(KeyboardInterrupt):
    """A Ctrl-C whose message already tells the user what was kept and how to resume."""


def cli_main(kept: str = "", bad_input: tuple[type[Exception], ...] = (),
             failed: tuple[type[Exception], ...] = ()) -> Callable[[Main], Main]:
    """Decorates a command's `main(argv) -> int` with the exits above. `kept`: what a rerun resumes
    from, said on Ctrl-C; `bad_input` / `failed`: the command's own error classes for exit 2 / 1."""
    bad_input_types: tuple[type[Exception], ...] = (ValueError, *bad_input)

    def decorate(main: Main) -> Main:
        @functools.wraps(main)
        def wrapped(*args, **kwargs) -> int:
            try:
                return main(*args, **kwargs)
            except bad_input_types as exc:
                print(f"error: {exc}", file=sys.stderr)
                return EXIT_BAD_INPUT
            except failed as exc:
                print(f"error: {exc}", file=sys.stderr)
                return EXIT_FAILED
            except Interrupted as exc:
                print(f"\n{exc}", file=sys.stderr)
                return EXIT_INTERRUPTED
            except KeyboardInterrupt as exc:
                detail = f" ({exc})" if str(exc) else ""
                print(f"\ninterrupted{detail}{': ' + kept if kept else ''}", file=sys.stderr)
                return EXIT_INTERRUPTED
        return wrapped  # type: ignore[return-value]
    return decorate


__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_INTERRUPTED", "Interrupted", "cli_main"]
