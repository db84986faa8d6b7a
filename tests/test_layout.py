"""The promised layout: a top-level ``data_modules`` package independent of ``meritsl_lightning``, configs
naming ``data_modules.<Class>``, pipeline commands in one folder, and no import circles between modules."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("meritsl_lightning", "data_modules")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every project module ``path`` imports, at module level or inside functions."""
    found: set[str] = set()
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                prefix = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*prefix, base] if base else prefix)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph = {}
    for name, path in files.items():
        edges = {m for m in _imports(path) if m in files and m != name}
        if path.name == "__init__.py":  # a package re-exporting its own modules is not a circle
            edges = {m for m in edges if not m.startswith(name + ".")}
        graph[name] = edges
    return graph


def test_data_modules_is_top_level_and_independent() -> None:
    assert (ROOT / "data_modules" / "__init__.py").is_file()
    assert not (ROOT / "meritsl_lightning" / "data_modules").exists()
    offenders = {
        _module_name(p): sorted(m for m in _imports(p) if m.startswith("meritsl_lightning"))
        for p in (ROOT / "data_modules").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}
    assert importlib.import_module("data_modules").IEMOCAPDataModule.__module__ == "data_modules.iemocap"


def test_no_import_circles() -> None:
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_pipeline_commands_live_in_one_folder() -> None:
    from meritsl_lightning.cli import PIPELINE_COMMANDS

    loose = {p.stem for p in (ROOT / "meritsl_lightning").glob("*.py")}
    for name, (target, _) in PIPELINE_COMMANDS.items():
        module = target.partition(":")[0]
        assert module.startswith(("meritsl_lightning.commands.", "meritsl_lightning.pseudo_labels.")), (name, module)
        assert module.rpartition(".")[2] not in loose


@pytest.mark.parametrize("config", sorted((ROOT / "experiments").rglob("*.yaml")), ids=lambda p: str(p.relative_to(ROOT)))
def test_configs_name_top_level_data_modules(config: Path) -> None:
    cfg = yaml.safe_load(config.read_text())
    data = (cfg or {}).get("data") if isinstance(cfg, dict) else None
    if not isinstance(data, dict) or "class_path" not in data:
        return  # overlays and sweep files carry no data class
    module, _, cls = data["class_path"].rpartition(".")
    assert module.startswith("data_modules")
    assert hasattr(importlib.import_module(module), cls)
