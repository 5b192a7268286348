"""bench/common.py: what every benchmark driver shares (public paths, the code a result records, product
commands, records). Seconds: no training, one tiny subprocess."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import common  # noqa: E402

import autovit_ray  # noqa: E402


def test_the_checkout_beside_bench_is_the_imported_package() -> None:
    """What the drivers' `sys.path` edits were for: the code that runs is this checkout's."""
    assert common.package_root() == common.ROOT
    assert Path(autovit_ray.__file__).resolve().is_relative_to(common.ROOT)


def test_results_record_public_paths_only(tmp_path, monkeypatch) -> None:
    """What a committed result records: `$AUTOVIT_BENCH_DIR/...` for benchmark artifacts, `<work tree>/...` for
    code, never a path of the machine that ran it; and no committed result holds one."""
    monkeypatch.setenv("AUTOVIT_BENCH_DIR", str(tmp_path / "bench"))
    assert common.bench_dir() == tmp_path / "bench"
    assert common.public_path(tmp_path / "bench" / "cifar10_result" / "luts" / "x.parquet") == \
        "$AUTOVIT_BENCH_DIR/cifar10_result/luts/x.parquet"
    worktree = common.ROOT.parent / "pinned-abc1234"
    assert common.public_path(worktree / "autovit_ray" / "__init__.py") == "pinned-abc1234/autovit_ray/__init__.py"
    assert common.public_path(common.ROOT) == common.ROOT.name
    assert common.public_path("relative/file.json") == "relative/file.json"
    assert common.public_paths({"a": [str(worktree), 3], "b": "text"}) == {"a": ["pinned-abc1234", 3], "b": "text"}

    machine_path = re.compile(r'"/(?:work|root|home|tmp|Users|mnt|data|opt)/')
    for path in sorted((common.ROOT / "bench" / "results").rglob("*.json")):  # the kept files too
        found = machine_path.search(path.read_text())
        assert found is None, f"{path.name} records a path of the machine that ran it near {found.group(0)!r}"


def test_a_kept_json_file_holds_public_paths_and_other_files_are_kept_as_they_are(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AUTOVIT_BENCH_DIR", str(tmp_path / "bench"))
    monkeypatch.setattr(common, "KEPT", tmp_path / "kept")
    score = tmp_path / "bench" / "claim" / "run.test.json"
    score.parent.mkdir(parents=True)
    data_dir = str(common.ROOT.parent / "shared" / "data" / "cifar10")
    score.write_text(json.dumps({"test_top1": 84.08, "config": {"data": {"data_dir": data_dir}},
                                 "folder": str(tmp_path / "bench" / "claim" / "run")}))
    plain = tmp_path / "bench" / "claim" / "plain.json"
    plain.write_text('{"a":   1}')
    table = tmp_path / "bench" / "lut.parquet"
    table.write_bytes(b"PAR1 /root/x")
    assert common.keep_files({"c/run.test.json": score, "c/plain.json": plain, "c/lut.parquet": table}) == [
        "c/run.test.json", "c/plain.json", "c/lut.parquet"]
    kept = json.loads((tmp_path / "kept" / "c" / "run.test.json").read_text())
    assert kept == {"test_top1": 84.08, "config": {"data": {"data_dir": "shared/data/cifar10"}},
                    "folder": "$AUTOVIT_BENCH_DIR/claim/run"}
    assert (tmp_path / "kept" / "c" / "plain.json").read_text() == '{"a":   1}'  # nothing to change: byte for byte
    assert (tmp_path / "kept" / "c" / "lut.parquet").read_bytes() == b"PAR1 /root/x"


def test_the_code_identity_is_the_commit_and_the_package_inside_its_work_tree() -> None:
    identity = common.code_identity()
    assert identity["root"] == common.ROOT.name
    assert identity["autovit_ray"] == f"{common.ROOT.name}/autovit_ray/__init__.py"
    assert re.fullmatch(r"[0-9a-f]{40}", identity["commit"])
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", common.code_commit())
    assert common.code_commit().startswith(identity["commit"])
    assert common.work_tree_commit("/nonexistent/tree") == "?"


def test_the_code_of_every_run_that_advanced_stages_is_kept() -> None:
    record = {"code": {"autovit_ray": "/w/pinned-a/autovit_ray/__init__.py", "root": "/w/pinned-a", "commit": "a" * 40}}
    older = {"code": {"autovit_ray": "/gone/autovit_ray/__init__.py", "root": "/gone"}}
    common.note_code(older)  # a record from before commits were kept, its tree removed since
    assert older["code_runs"][0] == {"autovit_ray": "/gone/autovit_ray/__init__.py", "root": "/gone", "commit": "?"}
    common.note_code(record)
    common.note_code(record)  # the same code again: recorded once
    assert record["code_runs"][0]["root"] == "/w/pinned-a" and len(record["code_runs"]) == 2 and "code" not in record
    assert record["code_runs"][1] == common.code_identity()


def test_a_corrupt_stage_json_is_removed_so_the_stage_runs_again(tmp_path) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text('{"best": []}')
    bad.write_text('{"best": [')
    assert common.readable_json(good) and not common.readable_json(bad) and not bad.exists()
    assert not common.readable_json(tmp_path / "missing.json")


def test_a_record_notes_the_code_of_a_run_but_not_of_a_report(tmp_path) -> None:
    path = tmp_path / "record.json"
    record, save = common.open_record(path, report_only=True)
    assert record == {} and not path.exists()
    record["stage"] = {"done": True}
    save()
    assert json.loads(path.read_text()) == {"stage": {"done": True}}
    record, save = common.open_record(path, report_only=False)
    assert record["code_runs"] == [common.code_identity()] and record["stage"] == {"done": True}
    path.write_text("{")  # a corrupt record starts again
    assert common.open_record(path, report_only=True)[0] == {}


def test_write_json_is_atomic_and_writes_what_json_cannot_as_text(tmp_path) -> None:
    path = tmp_path / "out" / "result.json"
    common.write_json(path, {"path": Path("/x"), "n": 1}, indent=2)
    assert path.read_text() == '{\n  "path": "/x",\n  "n": 1\n}'
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]  # no temporary file left


def test_run_cli_runs_this_checkouts_code_and_names_the_log_on_failure(tmp_path) -> None:
    log = tmp_path / "cmd.log"
    common.run_cli(["autovit_ray.space", "--help"], log)
    text = log.read_text()
    assert text.startswith(f"\n$ {sys.executable} -m autovit_ray.space --help\n") and "usage" in text
    common.run_cli(["site"], log)  # its sys.path: this checkout first, for the command's Ray workers too
    assert f"    {str(common.ROOT)!r}," in log.read_text()
    with pytest.raises(RuntimeError, match=r"failed \(exit 2\); see .*cmd\.log"):
        common.run_cli(["autovit_ray.space", "--no-such-flag"], log)
    assert common.mlflow_env(tmp_path) == {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
