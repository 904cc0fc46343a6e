"""The layout holds: folders are packages under one name, imports run one way, files stay small.

`agent/` and `model/` are installed as `vram_ml.agent` / `vram_ml.model` (setuptools
package-dir); imported by their folder names they would load a second copy of every module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGES = {"vram_ml": ROOT / "vram_ml", "vram_ml.agent": ROOT / "agent",
            "vram_ml.model": ROOT / "model"}
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    modules = {}
    for prefix, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((prefix, *parts))] = path
    # vram_ml's own walk also finds agent/ and model/ only through their mapping, never as paths
    return modules


def _top_level_imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules imported when `path` is imported (function-level imports are lazy: not counted)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            continue
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        for name in names:
            if name in modules:
                found.add(name)
    return found


@pytest.mark.parametrize("folder", ["model", "agent"])
def test_folder_name_imports_fail_with_the_right_name(folder):
    result = subprocess.run([sys.executable, "-c", f"import {folder}"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert f"import vram_ml.{folder}, not {folder}" in result.stderr


def test_the_mapped_packages_resolve_to_the_folders():
    import vram_ml.agent
    import vram_ml.model

    assert Path(vram_ml.model.__file__).parent == ROOT / "model"
    assert Path(vram_ml.agent.__file__).parent == ROOT / "agent"


def test_every_package_folder_is_installed():
    """pyproject's explicit package list (find() cannot map agent/ and model/) names every folder
    holding modules, or a non-editable install (CI's oldest-stack venv) lacks it."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"])
    folders = {name.rsplit(".", 1)[0] for name, path in _modules().items()
               if path.name != "__init__.py"}
    assert folders - listed == set()


def test_no_import_cycle_at_import_time():
    modules = _modules()
    graph = {name: _top_level_imports(path, modules) - {name} for name, path in modules.items()}
    # a submodule importing its own package's __init__ is how Python imports it: not a cycle
    for name, edges in graph.items():
        graph[name] = {edge for edge in edges if not name.startswith(edge + ".")}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for edge in sorted(graph[node]):
            if state.get(edge) == 1:
                cycles.append(" -> ".join(path[path.index(edge):] + [edge]))
            elif edge not in state:
                visit(edge, [*path, edge])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles


def test_no_source_file_over_the_size_guide():
    big = {str(path.relative_to(ROOT)): lines for path in _modules().values()
           if (lines := len(path.read_text().splitlines())) > MAX_LINES}
    assert not big, big


def test_architecture_modules_never_import_their_package_back():
    modules = _modules()
    for name in ("decoders", "vision", "registry", "shape"):
        imports = _top_level_imports(modules[f"vram_ml.architectures.{name}"], modules)
        assert "vram_ml.architectures" not in imports, name
