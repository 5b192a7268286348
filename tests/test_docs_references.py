"""User-facing text stands alone: README, docs/, configs/, cluster/, bench/ and the package (its --help
texts and docstrings) name no file a user does not have (the authors' shared folders, design notes)
and every repository path they name exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "cluster").glob("*"),
         *(ROOT / "autovit_ray" / "configs").rglob("*.yaml"), *(ROOT / "bench").glob("*.py"),
         *(ROOT / "autovit_ray").rglob("*.py")]
OUTSIDE = re.compile(r"\.\./shared|shared/data/|DESIGN\.md|design brief|/work/")
# repository paths as text names them: docs/x.md, bench/x.py, configs/train/x.yaml, autovit_ray/x.py, ...
REPO_PATH = re.compile(r"(?<![\w./-])((?:docs|bench|cluster|tests|autovit_ray|configs)/[\w./-]*\.(?:md|py|yaml|png|json))")


def test_no_text_names_a_file_outside_the_repository():
    found = [f"{path.relative_to(ROOT)}:{i}: {line.strip()}" for path in TEXTS if path.is_file()
             for i, line in enumerate(path.read_text(errors="replace").splitlines(), start=1) if OUTSIDE.search(line)]
    assert not found, "\n".join(found)


def test_every_repository_path_named_exists():
    missing = []
    for path in TEXTS:
        if not path.is_file():
            continue
        for i, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            for name in REPO_PATH.findall(line):
                if not (ROOT / name.rstrip(".")).exists():
                    missing.append(f"{path.relative_to(ROOT)}:{i}: {name}")
    assert not missing, "\n".join(missing)
