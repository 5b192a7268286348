"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def current_umask(directory: str | Path) -> int:
    """The process umask, read without setting it: `os.umask` can only read by writing, and a write
    races with every other thread creating files meanwhile. Linux: /proc/self/status; elsewhere the
    mode of a probe file created (and removed) in `directory`."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    probe = Path(directory) / f".umask-probe-{uuid.uuid4().hex}"
    fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o777)
    try:
        return ~os.fstat(fd).st_mode & 0o777
    finally:
        os.close(fd)
        probe.unlink()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder (same suffix, so writers that infer the
    format from it still work); on success move it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~current_umask(path.parent))  # mkstemp creates 0600; a normal file: 0666 & ~umask
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def replace_markdown_section(path: str | Path, heading: str, section: str) -> Path:
    """Replace the section of a Markdown file that starts with `heading` (up to the next '## ' heading)
    by `section`, or append it; the other sections stay as they are. Used by the benchmarks, each of
    which owns one section of BENCHMARKS.md."""
    path = Path(path)
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    start = text.find(heading)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + section.rstrip("\n") + "\n" + ("\n" + text[end + 1:] if end >= 0 else "")
    return atomic_write_text(path, text)
