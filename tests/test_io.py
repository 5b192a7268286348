"""Atomic writes: the permissions a plain write would give, read without touching the process umask."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from autovit_ray import io


def test_atomic_write_gets_a_plain_files_mode_without_setting_the_umask(tmp_path, monkeypatch):
    old = os.umask(0o027)  # the test sets it; the code under test must only read it
    try:
        def forbidden(_mask: int) -> int:
            raise AssertionError("os.umask called: setting the umask races with other threads")

        monkeypatch.setattr(os, "umask", forbidden)
        path = io.atomic_write_text(tmp_path / "a.txt", "x")
        assert stat.S_IMODE(path.stat().st_mode) == 0o640  # 0666 & ~027
        assert path.read_text() == "x" and not list(tmp_path.glob(".a.*"))
    finally:
        monkeypatch.undo()
        os.umask(old)


def test_umask_probe_without_proc(tmp_path, monkeypatch):
    real_read = io.Path.read_text

    def no_proc(self, *args, **kwargs):
        if str(self) == "/proc/self/status":
            raise OSError("no /proc here")
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(io.Path, "read_text", no_proc)
    old = os.umask(0o022)
    try:
        assert io.current_umask(tmp_path) == 0o022
    finally:
        os.umask(old)
    assert list(tmp_path.iterdir()) == []  # the probe file is gone


def test_concurrent_atomic_writes_keep_every_file_whole(tmp_path):
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            for j in range(20):
                io.atomic_write_text(tmp_path / f"f{i}.txt", f"{i}-{j}" * 100)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"f{i}.txt" for i in range(4)]
    assert all(p.read_text() == f"{p.stem[1:]}-19" * 100 for p in tmp_path.iterdir())


def test_bad_target_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError):
        io.atomic_write_text(tmp_path / "file" / "child.txt", "x")
