"""The recipes of docs/architecture.md ("Add a metric: two files", "Add a world: three files"),
taken from the page and installed as a plug-in from outside the packages, so the tests run the
code the page shows (a fenced python block whose first line is `# file: NAME.py` is one file)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_BLOCK = re.compile(r"```python\n# file: (\w+\.py)\n(.*?)```", re.S)


def recipe_files(section: str) -> dict[str, str]:
    """{file name: code} of the docs/architecture.md section headed `### {section}`."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    body = text.split(f"\n### {section}\n", 1)[1].split("\n### ", 1)[0]
    return {name: code for name, code in _BLOCK.findall(body)}


@pytest.fixture
def install_recipe(tmp_path, monkeypatch):
    """`install_recipe(section)`: the section's files in a folder on sys.path, its plug-in named
    in $DISTAR_PLUGINS; the registries it fills and its modules are dropped after the test."""
    installed: list[str] = []
    yield lambda section: installed.extend(_install(section, tmp_path / "plugin", monkeypatch))
    for module in installed:
        sys.modules.pop(module, None)


def _install(section: str, folder: Path, monkeypatch) -> list[str]:
    from di_star import plugins, presets
    from di_star.world import WORLDS
    from evalsuite.benchmarks import BENCHMARKS
    from evalsuite.metrics import METRICS
    from evalsuite.models.specs import MODEL_KINDS, PIPELINE_LOADERS
    from evalsuite.preflight import METRIC_CHECKS

    files = recipe_files(section)
    folder.mkdir()
    for name, code in files.items():
        (folder / name).write_text(code, encoding="utf-8")
    for registry in (WORLDS, presets.PRESETS, MODEL_KINDS, PIPELINE_LOADERS, BENCHMARKS,
                     METRICS, METRIC_CHECKS):
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
        monkeypatch.setattr(registry, "_descriptions", dict(registry._descriptions))
    monkeypatch.setattr(presets, "_WORLD_SCALES", dict(presets._WORLD_SCALES))
    monkeypatch.setattr(plugins, "REGISTERED", set())
    modules = [name[:-3] for name in files]
    monkeypatch.syspath_prepend(str(folder))
    plugin = next(m for m in modules if m.endswith("_plugin"))
    monkeypatch.setenv("DISTAR_PLUGINS", plugin)
    return modules
