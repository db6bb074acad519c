"""The data flow of the README's "Layout", checked on the source: load → graph → (weights | neurons | paths |
patterns) → capture → dataset / compare → report → cli, each module importing only its own layer or those before
it (lazy imports inside functions count too); onnxruntime only in ``runtime``; raw onnx only at the loading edge;
no framework anywhere in the library."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import onnxscope

ROOT = Path(onnxscope.__file__).parent

# one list per layer, in the order data flows; a module may import its own layer and every earlier one
LAYERS: list[set[str]] = [
    {"_ir", "errors", "limits", "stats", "discrepancy", "testing"},
    {"_files", "render"},
    {"_load"},
    {"graph"},
    {"weights", "costs", "evaluator"},
    {"neurons", "paths", "align"},
    {"patterns"},
    {"model"},
    {"recompute", "expose"},
    {"inputs", "runtime"},
    {
        "result",
        "views",
        "persist",
    },  # Capture's convenience methods (node, neuron, save) import views/persist lazily
    {"session"},
    {"_dataset_io", "_dataset_shard", "dataset"},
    {"sides", "comparison"},
    {"audit", "charts"},
    {"page"},
    {"cli", "__main__"},
]
RANK = {m: i for i, layer in enumerate(LAYERS) for m in layer}


def _modules() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if p.name != "__init__.py" or p.parent != ROOT)


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    return rel.parts[0]  # onnxscope/cli/* is the cli layer


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            if node.module == "onnxscope":  # from onnxscope import align
                found.update(f"onnxscope.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_every_module_has_a_layer():
    assert {_module_name(p) for p in _modules()} - RANK.keys() == set()


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down_the_data_flow(path):
    me = RANK[_module_name(path)]
    upward = []
    for name in _imports(path):
        parts = name.split(".")
        if parts[0] != "onnxscope" or len(parts) < 2 or parts[1] not in RANK:
            continue  # the package itself (__version__) or a name re-exported by it
        if RANK[parts[1]] > me:
            upward.append(name)
    assert upward == [], f"{path.name} imports later layers"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_heavy_dependencies_stay_at_their_edge(path):
    tops = {n.split(".")[0] for n in _imports(path)}
    assert not tops & {"torch", "tensorflow", "keras", "tf2onnx"}, "frameworks belong in converters/"
    if "onnxruntime" in tops:
        assert path.name == "runtime.py", "onnxruntime is imported by onnxscope.runtime only"
    if "onnx" in tops:
        names = {n for n in _imports(path) if n.split(".")[0] == "onnx"}
        # the loading edge reads protobufs; the evaluator only runs onnx's reference evaluator on one _load hands it
        assert path.name == "_load.py" or names <= {"onnx.reference"}, names
