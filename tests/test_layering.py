"""The code's layering: main.py → runners → models, samplers; samplers is the math and imports neither; no module
imports another in a circle (lazy, function-level imports included: a circle hidden in a function is still one);
and every module imports on its own in a fresh interpreter."""
import ast
import subprocess
import sys

import pytest

from tests.conftest import REPO

PACKAGES = ("samplers", "models", "runners")
# which project packages each layer may import
ALLOWED = {"samplers": {"samplers"}, "models": {"models", "samplers"}, "runners": {"runners", "models", "samplers"},
           "main": {"runners", "samplers"}}


def project_modules() -> dict:
    """module name → file, for main.py and every module of the packages."""
    modules = {"main": REPO / "main.py"}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports_of(name: str, path, modules: dict) -> set:
    """The project modules that ``name`` imports anywhere in its file (absolute and relative imports)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for target in targets:
            while target and target not in modules:  # the longest project module the name lies in
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_layers_import_only_what_they_may():
    wrong = [(a, b) for a, targets in graph().items() for b in targets
             if b.split(".")[0] not in ALLOWED[a.split(".")[0]]]
    assert not wrong, wrong


def test_no_import_circle():
    g = graph()
    # a package's __init__ importing its own submodules is how packages export; leave those edges out
    edges = {a: {b for b in targets if not (b.startswith(a + ".") and (REPO / a.replace(".", "/")).is_dir())}
             for a, targets in g.items()}
    state, cycle = {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycle.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycle, cycle


def test_every_module_imports_alone():
    """Each module imported first, with no other project module loaded yet (third-party ones stay loaded, so
    torch is imported once): an import circle shows up as an ImportError here whatever the import order."""
    names = sorted(project_modules())
    script = ("import importlib, sys, traceback\n"
              f"names, roots = {names!r}, {('main',) + PACKAGES!r}\n"
              "bad = []\n"
              "for name in names:\n"
              "    for loaded in [m for m in sys.modules if m.split('.')[0] in roots]:\n"
              "        del sys.modules[loaded]\n"
              "    try:\n"
              "        importlib.import_module(name)\n"
              "    except Exception as e:\n"
              "        bad.append((name, repr(e)))\n"
              "print(bad)\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_every_command_has_help():
    from main import build_parser

    for command in ("sample", "fid", "stats", "ablate", "train"):
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args([command, "--help"])
        assert exit_.value.code == 0
