"""Every `alias.name` the code reads off one of the project's own modules names something that
module defines. A rename once left service/client/demo.py calling `commands.wait` (renamed
`wait_experiment`): `make demo` died with AttributeError after the service had started, and no
test ran that line (the demo takes minutes). ruff's undefined-name check (tests/test_lint.py) does
not see attributes; this does, for the modules imported by name (`from pkg import mod`, `import pkg.mod as m`)."""
from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "trainer", "evaluator")


def _own_module(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def _module_aliases(tree: ast.Module) -> dict[str, str]:
    """local name -> dotted module, for the project's modules imported at module level by name."""
    aliases: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname and _own_module(a.name):
                    aliases[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and _own_module(node.module):
            for a in node.names:
                dotted = f"{node.module}.{a.name}"
                if _is_module(dotted):
                    aliases[a.asname or a.name] = dotted
    return aliases


def _is_module(dotted: str) -> bool:
    try:
        return importlib.util.find_spec(dotted) is not None
    except (ImportError, ValueError):
        return False


def _missing(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    aliases = _module_aliases(tree)
    bound = {t.id for n in ast.walk(tree) if isinstance(n, (ast.Assign, ast.AnnAssign, ast.For, ast.With))
             for t in ast.walk(n) if isinstance(t, ast.Name) and isinstance(t.ctx, ast.Store)}
    bound |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments) for a in (*n.args, *n.kwonlyargs)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases \
                and node.value.id not in bound:
            module = importlib.import_module(aliases[node.value.id])
            if not hasattr(module, node.attr) and not _is_module(f"{module.__name__}.{node.attr}"):
                out.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr} ({module.__name__} has no {node.attr!r})")
    return out


def test_every_attribute_read_off_an_own_module_exists():
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py")) if "migrations" not in p.parts]
    missing = [m for p in files for m in _missing(p)]
    assert not missing, "\n".join(missing)
