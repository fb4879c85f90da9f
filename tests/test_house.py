"""The house rules of docs/design.md section 4, checked on the package: small modules and functions, and
private names used only in their own module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rmd_ray"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _modules(root: Path = PACKAGE) -> list[Path]:
    return sorted(root.rglob("*.py"))


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def long_modules(paths, root: Path = ROOT) -> list[str]:
    return [f"{p.relative_to(root)}: {n} lines" for p in paths
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]


def long_functions(paths, root: Path = ROOT) -> list[str]:
    out = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    out.append(f"{path.relative_to(root)}:{node.lineno} {node.name}: {length} lines")
    return out


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _absolute(module: str, level: int, here: str, is_package: bool) -> str:
    if not level:
        return module
    base = here.split(".") if is_package else here.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def private_imports(paths, root: Path = ROOT) -> list[str]:
    """``from rmd_ray.x import _name``, ``import rmd_ray.x._mod`` and ``alias._name`` on an imported rmd_ray
    module, from any module other than the one that defines the name."""
    out = []
    for path in paths:
        here, tree = _module_name(path, root), ast.parse(path.read_text())
        modules: dict[str, str] = {}  # local alias -> rmd_ray module it names
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                source = _absolute(node.module or "", node.level, here, path.name == "__init__.py")
                if not source.startswith("rmd_ray"):
                    continue
                if any(_private(part) for part in source.split(".")):
                    out.append(f"{path.relative_to(root)}:{node.lineno} imports from private module {source}")
                for alias in node.names:
                    if _private(alias.name):
                        out.append(f"{path.relative_to(root)}:{node.lineno} imports {source}.{alias.name}")
                    modules[alias.asname or alias.name] = f"{source}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("rmd_ray") and any(_private(p) for p in alias.name.split(".")):
                        out.append(f"{path.relative_to(root)}:{node.lineno} imports private module {alias.name}")
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name)
                    and node.value.id in modules):
                out.append(f"{path.relative_to(root)}:{node.lineno} uses {modules[node.value.id]}.{node.attr}")
    return out


def test_no_module_over_400_lines():
    assert long_modules(_modules()) == []


def test_no_function_over_80_lines():
    assert long_functions(_modules()) == []


def test_no_module_uses_another_modules_private_names():
    assert private_imports(_modules()) == []


def test_the_checks_catch_planted_violations(tmp_path):
    package = tmp_path / "rmd_ray" / "core"
    package.mkdir(parents=True)
    (package / "a.py").write_text("def _helper():\n    return 1\n" + "x = 1\n" * 400)
    body = "\n".join(f"    y{i} = {i}" for i in range(81))
    (package / "b.py").write_text(
        "from rmd_ray.core.a import _helper\nfrom rmd_ray.core import a\nfrom . import _hidden\n"
        f"def long():\n{body}\n    return a._helper()\n"
    )
    paths = sorted(tmp_path.rglob("*.py"))
    assert long_modules(paths, tmp_path) == ["rmd_ray/core/a.py: 402 lines"]
    assert long_functions(paths, tmp_path) == ["rmd_ray/core/b.py:4 long: 83 lines"]
    assert private_imports(paths, tmp_path) == [
        "rmd_ray/core/b.py:1 imports rmd_ray.core.a._helper",
        "rmd_ray/core/b.py:3 imports rmd_ray.core._hidden",
        "rmd_ray/core/b.py:86 uses rmd_ray.core.a._helper",
    ]


def test_no_measurement_history_in_code_text():
    """Timings and ratios from runs live in docs/benchmarks.md, not in comments or docstrings."""
    pattern = re.compile(r"\(measured|measured:|measured on|, measured|\bwas \d[\d.]* ?(s|ms|min)\b|, now \d[\d.]* ?s\b"
                         r"|\b(this|previous|last) session\b")
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in _modules() for i, line in enumerate(p.read_text().splitlines(), 1)
            if pattern.search(line)]
    assert hits == []
