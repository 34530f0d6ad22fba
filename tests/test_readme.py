"""The README runs as written: its python snippets, and its offline `distar` commands (parsed out
of README.md, run in a fresh folder, exit codes and printed summaries checked)."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def python_snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, re.S)


def shell_commands() -> list[str]:
    """Every command line of the README's bash blocks, continuation lines joined, comments cut."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for cmd in block.replace("\\\n", " ").splitlines():
            cmd = re.sub(r"\s+#.*$", "", cmd).strip()
            if cmd:
                out.append(re.sub(r"\s+", " ", cmd))
    return out


def _store_with_a_score(root: Path) -> None:
    from evalsuite.store import ImageRow, ResultsStore, ScoreRow
    store = ResultsStore(root / "results")
    store.add_images([ImageRow("h", "tiny", "1", i, 0, "tiny_sd15", f"p{i}", i, f"x{i}.png", "s")
                      for i in range(2)])
    store.add_scores([ScoreRow("h", "tiny", "1", i, 0, "clip", "v", float(i)) for i in range(2)])


def test_readme_has_a_python_snippet():
    assert python_snippets(), "the README's pandas snippet is a ```python block"


@pytest.mark.parametrize("i", range(len(python_snippets())))
def test_python_snippet_runs(i, tmp_path, monkeypatch, capsys):
    _store_with_a_score(tmp_path)
    monkeypatch.chdir(tmp_path)
    exec(compile(python_snippets()[i], f"README.md python snippet {i}", "exec"), {})
    assert "tiny_sd15" in capsys.readouterr().out


# The README's commands that run offline on a CPU, with what each must print.
OFFLINE = {
    "distar models": r"tiny_sdxl",
    "distar metrics": r"smoke_clip",
    "distar eval --model tiny_sdxl --bench parti --limit 8 --metrics smoke_clip":
        r"smoke_clip\s+-?\d[\d.]*\s+\[\S+, \S+\]\s+8\n(.|\n)*latency: .* s / 10 images",
    "distar train --list": r"gmm/di_star_in",
    "distar train --preset gmm/di_star_in --out runs/gmm": r"run dir: runs/gmm",
    "distar leaderboard": r"wrote \d+ files from results",
    "distar fetch --model flux_dev --bench parti --metrics pickscore,imagereward,clip --plan":
        r"black-forest-labs/FLUX.1-dev @ main(.|\n)*transformer/config.json(.|\n)*"
        r"THUDM/ImageReward @ main",
}


def test_offline_commands_are_in_the_readme():
    cmds = shell_commands()
    missing = [c for c in OFFLINE if c not in cmds]
    assert not missing, f"README no longer has {missing}: update OFFLINE here with it"


@pytest.mark.slow
def test_readme_offline_commands_run_as_written(tmp_path):
    """In README order, in one fresh folder (the leaderboard reads the eval's store)."""
    env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    bin_dir = Path(sys.executable).parent
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    for cmd in [c for c in shell_commands() if c in OFFLINE]:
        argv = shlex.split(cmd)
        r = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=900)
        assert r.returncode == 0, f"{cmd}\n{r.stdout}\n{r.stderr}"
        assert re.search(OFFLINE[cmd], r.stdout + r.stderr), f"{cmd}\n{r.stdout}\n{r.stderr}"
        assert "Traceback" not in r.stderr
