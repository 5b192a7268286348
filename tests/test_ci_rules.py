"""The suite's own rules: under CI=true a skip is allowed only for the capabilities README lists."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py").read_text()


@pytest.mark.parametrize(("ci", "reason", "expected"), [
    ("true", "chromium is missing", {"failed": 1}),
    ("true", "needs a GPU", {"skipped": 1}),
    ("", "chromium is missing", {"skipped": 1}),
])
def test_skips_in_ci_fail_unless_listed(pytester, monkeypatch, ci: str, reason: str, expected: dict) -> None:
    monkeypatch.setenv("CI", ci)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(f"""
import pytest

def test_a():
    pytest.skip({reason!r})
""")
    result = pytester.runpytest_inprocess("-p", "no:randomly")
    result.assert_outcomes(**expected)
    if "failed" in expected:
        result.stdout.fnmatch_lines(["*skipped under CI=true*chromium is missing*"])
