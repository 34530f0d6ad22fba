"""Imports run one way: distar.core <- evalsuite <- di_star <- distar.cli. A module may import
only its own layer and the layers below it, top-level or lazily inside a function, and no
string that names a module (importlib, "module:attr" registry entries) may reach upward."""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Lowest first; a module's layer is the first prefix that matches its dotted name.
LAYERS = [("distar.cli", 3), ("distar.__main__", 3), ("di_star", 2), ("evalsuite", 1),
          ("distar.core", 0), ("distar", 0)]
_MODULE_STRING = re.compile(r"^(di_star|evalsuite|distar)(\.[A-Za-z_][\w.]*)?(:[\w.]+)?$")


def layer_of(module: str) -> int | None:
    for prefix, layer in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_names(source: str, module: str) -> list[tuple[int, str]]:
    """(line, module) for every import statement anywhere in the file (functions included),
    relative imports resolved, and every string constant that names one of our modules
    (importlib.import_module("..."), lazy "pkg.mod:attr" registry entries)."""
    found = []
    package = module.rsplit(".", 1)[0] if "." in module else module
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _MODULE_STRING.match(node.value) and ("." in node.value or ":" in node.value):
                found.append((node.lineno, node.value.partition(":")[0]))
    return found


def violations(source: str, module: str) -> list[str]:
    own = layer_of(module)
    bad = []
    for line, name in imported_names(source, module):
        target = layer_of(name)
        if own is not None and target is not None and target > own:
            bad.append(f"{module}:{line} imports {name}")
    return bad


def our_modules():
    for pkg in ("distar", "evalsuite", "di_star"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            yield path, module_name(path)


def test_no_upward_import_anywhere():
    bad = []
    for path, module in our_modules():
        bad += violations(path.read_text(encoding="utf-8"), module)
    assert not bad, "imports against the direction core <- evalsuite <- di_star <- cli:\n" + "\n".join(bad)


def test_evalsuite_never_names_di_star():
    """The issue's rule spelled out on its own: no evalsuite file imports di_star in any form."""
    bad = []
    for path, module in our_modules():
        if module.startswith("evalsuite"):
            bad += [f"{module}:{line} {name}" for line, name in
                    imported_names(path.read_text(encoding="utf-8"), module)
                    if name == "di_star" or name.startswith("di_star.")]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("source", [
    "import di_star\n",
    "from di_star.toy import digits\n",
    "def f():\n    from di_star.trainer import train\n",
    "import importlib\ndef f():\n    return importlib.import_module('di_star.toy.metrics')\n",
    "REGISTRY = {'digits': 'di_star.toy.harness:digits_bench'}\n",
    "from distar.cli import app\n",
])
def test_the_scan_catches_each_form(source):
    """The scanner itself: every form of an upward import in an evalsuite module is found."""
    assert violations(source, "evalsuite.metrics.example")


def test_core_imports_only_itself():
    for path, module in our_modules():
        if layer_of(module) == 0:
            names = [n for _, n in imported_names(path.read_text(encoding="utf-8"), module)]
            assert all(layer_of(n) in (None, 0) for n in names), (module, names)


def private_parent(name: str) -> str | None:
    """The package that owns the first private module on dotted path `name` (`evalsuite.metrics`
    for `evalsuite.metrics.loading.x`), or None when no part of it is private."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i])
    return None


def private_crossings(source: str, module: str, ours: set[str]) -> list[str]:
    """`from pkg.mod import _name`, `mod._name` on one of our modules, and a private module
    (`_loading`) imported from outside its own package, in any form (`from pkg import _mod`,
    `from pkg._mod import x`, `import pkg._mod`, a "pkg._mod:attr" string)."""
    tree, bad, aliases = ast.parse(source), [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and layer_of(node.module) is not None:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if full in ours:
                    aliases[a.asname or a.name] = full
                if not a.name.startswith("_") or a.name.startswith("__"):
                    continue
                inside = module == node.module or module.startswith(node.module + ".")
                if full not in ours:
                    bad.append(f"{module}:{node.lineno} imports private name {full}")
                elif not inside:
                    bad.append(f"{module}:{node.lineno} imports private module {full}")
        elif isinstance(node, ast.Import):
            aliases.update({a.asname or a.name: a.name for a in node.names if a.name in ours})
    for line, name in imported_names(source, module):
        parent = private_parent(name)
        if parent is not None and not (module == parent or module.startswith(parent + ".")):
            bad.append(f"{module}:{line} imports private module {name}")
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            bad.append(f"{module}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    return bad


def test_no_private_name_crosses_a_module():
    modules = dict((m, p) for p, m in our_modules())
    ours = set(modules)
    bad = []
    for module, path in modules.items():
        bad += private_crossings(path.read_text(encoding="utf-8"), module, ours)
    assert not bad, "\n".join(bad)


def test_the_private_scan_catches_each_form():
    ours = {"evalsuite.leaderboard", "evalsuite.models.loading", "evalsuite.metrics._loading"}
    assert private_crossings("from evalsuite.leaderboard import _fmt\n", "evalsuite.gallery", ours)
    assert private_crossings("from evalsuite.models import loading\nloading._from_pretrained\n",
                             "di_star.sdxl.models", ours)
    assert private_crossings("from evalsuite.metrics import _loading\n", "di_star.sdxl.reward", ours)
    assert not private_crossings("from evalsuite.metrics import _loading\n",
                                 "evalsuite.metrics.hps", ours)
    for form in ("from evalsuite.metrics._loading import provenance\n",
                 "import evalsuite.metrics._loading\n",
                 "def f():\n    from evalsuite.metrics._loading import provenance\n",
                 "REGISTRY = {'x': 'evalsuite.metrics._loading:provenance'}\n"):
        assert private_crossings(form, "di_star.mini.learned_metrics", ours), form
        assert not private_crossings(form, "evalsuite.metrics.fid", ours), form


# The mini world lives in di_star/mini/ and registers itself (di_star/mini/plugin.py): evalsuite
# holds no module, data file or folder of it and names it nowhere, code, strings or comments.
_MINI_WORD = re.compile(r"(?<![a-z])mini(?![a-z])", re.IGNORECASE)


def mini_mentions(text: str) -> list[int]:
    """Line numbers where `text` names the mini world ('mini', 'mini_fd', 'MINI_DIR'; not
    'minimum')."""
    return [i for i, line in enumerate(text.splitlines(), 1) if _MINI_WORD.search(line)]


def test_evalsuite_holds_no_mini_world():
    pkg = ROOT / "evalsuite"
    paths = [p for p in pkg.rglob("*") if "__pycache__" not in p.parts]
    bad = [f"{p.relative_to(ROOT)}: a mini-world file or folder" for p in paths
           if _MINI_WORD.search(p.name)]
    for p in paths:
        if p.is_file() and p.suffix in (".py", ".md", ".toml", ".json"):
            bad += [f"{p.relative_to(ROOT)}:{n} names the mini world"
                    for n in mini_mentions(p.read_text(encoding="utf-8"))]
    assert not bad, "evalsuite names no world; the mini world lives in di_star/mini/:\n" + \
        "\n".join(bad)


def test_the_mini_scan_catches_each_form():
    for text in ('"mini_fd": ("mini:MiniFD", "...")', "from evalsuite.mini import scene",
                 'os.environ.get("DISTAR_MINI_DIR")', "# the Mini world's gold judge",
                 "SUITES.add('mini', ...)"):
        assert mini_mentions(text), text
    assert not mini_mentions("minimum = min(x); minimal_k = 4  # Gemini")


def reaches_tests(source: str, test_modules: set[str]) -> list[tuple[int, str]]:
    """(line, what) for each way `source` reaches a test module: an import statement, a
    "module:attr" string (a lazy registry entry) or an importlib.import_module("...") string."""
    roots = test_modules | {"tests"}
    found = []
    for node in ast.walk(ast.parse(source)):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                 else [])
        found += [(node.lineno, f"imports {n}") for n in names if n.split(".")[0] in roots]
        if (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", ""))
                == "import_module" and node.args and isinstance(node.args[0], ast.Constant)
                and str(node.args[0].value).split(".")[0] in roots):
            found.append((node.lineno, f"imports {node.args[0].value} by name"))
        if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and re.fullmatch(r"[\w.]+:[\w.]+", node.value)
                and node.value.split(".")[0].split(":")[0] in roots):
            found.append((node.lineno, f"names {node.value}"))
    return found


def test_nothing_imports_tests():
    """Product code and scripts never reach into tests/ (no sys.path entry for it, no import of
    a test module, in any form): code both use lives in a package (the reference adapters:
    di_star.bench); code only tests use lives in tests/ (tests/loop_hooks.py,
    tests/closed_form_helpers.py)."""
    test_modules = {p.stem for p in (ROOT / "tests").glob("*.py")}
    bad = []
    for path in sorted((ROOT / "scripts").glob("*.py")) + [p for p, _ in our_modules()]:
        text = path.read_text(encoding="utf-8")
        if re.search(r"sys\.path\.\w+\([^)]*tests", text):
            bad.append(f"{path.relative_to(ROOT)}: puts tests/ on sys.path")
        bad += [f"{path.relative_to(ROOT)}:{line} {what}"
                for line, what in reaches_tests(text, test_modules)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("source", [
    "import loop_hooks", "from tests.loop_hooks import hooked", "import tests.recipes",
    "def f():\n    from closed_form_helpers import GaussianMixtureWorld",
    "importlib.import_module('loop_hooks')", "REG.add('x', 'loop_hooks:hooked')",
])
def test_the_tests_scan_catches_each_form(source):
    assert reaches_tests(source, {"loop_hooks", "closed_form_helpers", "recipes"})
    assert not reaches_tests("import di_star.trainer\nREG.add('x', 'di_star.toy.gmm:GMMWorld')",
                            {"loop_hooks", "closed_form_helpers", "recipes"})


def test_scripts_hold_only_what_users_run():
    """At most 8 files; bench helpers and research probes are importable modules
    (di_star.bench, di_star.mini.probes), not scripts."""
    files = sorted(p.name for p in (ROOT / "scripts").iterdir()
                   if p.is_file() and not p.name.startswith("."))
    assert len(files) <= 8, files
