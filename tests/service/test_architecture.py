"""The shape of the code, measured from its imports (ast, nothing is run): service/ is rooms by
role whose imports run one way with no circles; trainer/ and evaluator/ never import service/ and
trainer/ never imports evaluator/; no file is over ~400 lines; an import hidden in a function is
only there to keep a heavy module off a light path, and says so. The hand-written executors of the
tests are held against the Executor protocol, so a fake cannot drift from the real one."""
from __future__ import annotations

import ast
import inspect
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# room -> the rooms it may import (service/__init__ and __main__ stand above them all)
MAY_IMPORT = {
    "core": set(),
    "store": {"core"},
    "domain": {"store", "core"},
    "runtime": {"domain", "store", "core"},
    "api": {"domain", "runtime", "store", "core"},
    "web": {"api", "domain", "runtime", "store", "core"},
    "app": {"api", "web", "domain", "runtime", "store", "core"},
    "client": {"app", "web", "store", "core"},
}
# what a function may import lazily: heavy modules, kept off a light path (with a comment saying so)
HEAVY = ("ray", "torch", "matplotlib", "scipy", "evaluator", "service.app.main", "service.runtime.run_actor",
         "service.runtime.sweep_actor")
MAX_LINES = 420


def _modules(package: str) -> dict[str, Path]:
    out = {}
    for f in (ROOT / package).rglob("*.py"):
        rel = f.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts[:-1]) if rel.name == "__init__" else list(rel.parts)
        out[".".join(parts)] = f
    return out


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(module, line, inside a function) of every import."""
    tree = ast.parse(path.read_text())
    inside = {id(n) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno, id(node) in inside) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mods = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            found += [(m, node.lineno, id(node) in inside) for m in mods]
    return found


def _graph(package: str) -> dict[str, set[str]]:
    modules = _modules(package)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for mod, _, _ in _imports(path):
            if mod in modules and mod != name:
                graph[name].add(mod)
    return graph


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in MAY_IMPORT) else None


def test_service_files_import_each_other_without_circles():
    graph = _graph("service")
    state: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in graph[m]:
            if state.get(n) == 1:
                circles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m)
    assert not circles, circles


def test_rooms_import_one_way():
    wrong = defaultdict(list)
    for module, targets in _graph("service").items():
        src = _room(module)
        for target in targets:
            dst = _room(target)
            if src is None or dst is None or dst == src:
                continue
            if dst not in MAY_IMPORT[src]:
                wrong[f"{src} -> {dst}"].append(f"{module} imports {target}")
    assert not wrong, dict(wrong)
    assert set(_room(m) for m in _graph("service")) - {None} == set(MAY_IMPORT)  # every room exists


@pytest.mark.parametrize("package,never", [("trainer", ("service", "evaluator")), ("evaluator", ("service",))])
def test_the_packages_never_import_the_service(package, never):
    bad = [f"{path.relative_to(ROOT)}:{line} {mod}" for path in _modules(package).values()
           for mod, line, _ in _imports(path) if mod.split(".")[0] in never]
    assert not bad, bad


def test_no_file_is_over_about_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in _modules("service").values() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_imports_in_functions_keep_a_heavy_module_off_a_light_path_and_say_so():
    bad = []
    for path in _modules("service").values():
        lines = path.read_text().splitlines()
        for mod, line, inside in _imports(path):
            if not inside:
                continue
            commented = "#" in lines[line - 1] or lines[line - 2].strip().startswith("#")
            heavy = mod == "matplotlib" or any(mod == h or mod.startswith(h + ".") for h in HEAVY)
            if not (heavy and commented):
                bad.append(f"{path.relative_to(ROOT)}:{line} {mod}" + ("" if heavy else " (not heavy)"))
    assert not bad, sorted(set(bad))


def _fakes():
    from fakes import FakeExecutor
    from test_service_cli import InstantExecutor
    from test_sweeps import ScriptedExecutor

    return [FakeExecutor, InstantExecutor, ScriptedExecutor]


@pytest.mark.parametrize("fake", _fakes(), ids=lambda f: f.__name__)
def test_test_executors_keep_to_the_executor_protocol(fake, tmp_path):
    """Every method of the protocol, with the protocol's parameter names (the real RayExecutor too)."""
    from service.runtime.executor import Executor, RayExecutor

    protocol = {n: f for n, f in vars(Executor).items() if callable(f) and not n.startswith("_")}
    for cls in (fake, RayExecutor):
        instance = cls(tmp_path) if cls.__name__ == "FakeExecutor" else cls()
        assert isinstance(instance, Executor), cls
        for name, method in protocol.items():
            want = list(inspect.signature(method).parameters)[1:]
            got = list(inspect.signature(getattr(instance, name)).parameters)
            assert got == want, (cls.__name__, name, got, want)
