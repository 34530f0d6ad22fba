"""Committed files carry no machine: no absolute home / work paths (manifests and reports record
paths relative to the repository, `distar.core.paths.portable_path`), and the docs cite no file
outside the repository."""
import re
import subprocess
from pathlib import Path

import pytest

from distar.core.paths import REPO_ROOT, portable_path

ROOT = Path(__file__).resolve().parents[1]
# Built from parts so this file does not match itself.
_MACHINE_PATH = re.compile("(?<![\\w.~])/" + "(home|work|Users|root|mnt|scratch)" + "/[\\w.-]+")
_MD_NAME = re.compile(r"[\w./-]+\.md\b")


def committed_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        pytest.skip("not a git checkout")
    return [ROOT / f for f in out.splitlines() if (ROOT / f).is_file()]


def text_of(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None  # binary (weights, images)
    return data.decode("utf-8", errors="replace")


def machine_paths(text: str) -> list[str]:
    return [m.group(0) for m in _MACHINE_PATH.finditer(text)]


def test_the_scan_catches_machine_paths():
    assert machine_paths('{"world": "/wo' + 'rk/main/runs/mini_lit"}')
    assert machine_paths("built in /ho" + "me/alice/build: 30 MB")
    assert not machine_paths('{"world": "runs/mini_lit", "out": "/tmp/gpu_suite", "url": '
                             '"https://example.org/home/x"}')


def test_no_committed_file_holds_a_machine_path():
    bad = []
    for f in committed_files():
        text = text_of(f)
        if text is not None:
            bad += [f"{f.relative_to(ROOT)}: {p}" for p in machine_paths(text)]
    assert not bad, "record paths relative to the repository (portable_path):\n" + "\n".join(bad)


def test_docs_cite_only_files_of_the_repository():
    """Every `*.md` a committed markdown file names is in the repository, or one the product
    writes (the paper suite's tables, the GPU suite's report)."""
    from evalsuite.leaderboard.tables import TABLE1_FILE, TABLE2_FILE, TABLE3_FILE
    files = committed_files()
    names = {f.name for f in files} | {TABLE1_FILE, TABLE2_FILE, TABLE3_FILE, "gpu_suite.md"}
    bad = []
    for f in files:
        if f.suffix == ".md":
            bad += [f"{f.relative_to(ROOT)}: {m}" for m in _MD_NAME.findall(f.read_text())
                    if Path(m).name not in names]
    assert not bad, "\n".join(bad)


def test_portable_path(tmp_path):
    assert portable_path(REPO_ROOT / "di_star" / "mini" / "data") == "di_star/mini/data"
    assert portable_path(REPO_ROOT) == "."
    assert portable_path(tmp_path / "build_large") == "<outside>/build_large"


def test_provenance_records_this_projects_commit(tmp_path, monkeypatch):
    """The one git helper: the project's own checkout, whatever folder the user stands in (a
    git repository of their own here), or $DISTAR_BUILD_COMMIT for a copy without .git."""
    from distar.core.paths import project_commit
    try:
        ours = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pytest.skip("not a git checkout")
    other = tmp_path / "their_repo"
    other.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=other, check=True, timeout=30)
    monkeypatch.chdir(other)
    monkeypatch.delenv("DISTAR_BUILD_COMMIT", raising=False)
    assert project_commit() == ours and ours.startswith(project_commit(short=True))
    monkeypatch.setenv("DISTAR_BUILD_COMMIT", "0123456789abcdef")
    assert project_commit() == "0123456789abcdef" and project_commit(short=True) == "0123456"
