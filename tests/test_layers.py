"""The package's layers: a module imports only from its own layer and the layers below it.

core -> data -> training -> evaluation -> outputs -> lifecycle, then the command line (`gan/cli.py`) and the
Prefect flows (`flows/`) on top. Imports are read from the source (`ast`), nested ones included, so a lazy import
inside a function counts as much as one at the top of a file.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("core", "data", "training", "evaluation", "outputs", "lifecycle")
TOP_FILES = {"__init__.py": "entry", "__main__.py": "entry", "cli.py": "entry"}
RANK = {**{name: i for i, name in enumerate(LAYERS)}, "entry": len(LAYERS), "flows": len(LAYERS) + 1}


def layer_of_file(path: Path) -> str:
    """The layer a source file belongs to; an error for a gan module outside every layer package."""
    rel = path.relative_to(REPO)
    if rel.parts[0] == "flows":
        return "flows"
    if len(rel.parts) == 2:
        if rel.name not in TOP_FILES:
            raise AssertionError(f"{rel}: a module directly in gan/; put it in one of the layer packages {LAYERS}")
        return TOP_FILES[rel.name]
    if rel.parts[1] not in LAYERS:
        raise AssertionError(f"{rel}: gan/{rel.parts[1]}/ is not a layer package ({', '.join(LAYERS)})")
    return rel.parts[1]


def layer_of_module(dotted: str) -> str | None:
    """`gan.training.step` -> training; `gan.cli` -> entry; `flows.pipeline` -> flows; None outside the project."""
    parts = dotted.split(".")
    if parts[0] == "flows":
        return "flows"
    if parts[0] != "gan":
        return None
    if len(parts) == 1:
        return None  # `from gan import X`: X is resolved below
    if parts[1] in LAYERS:
        return parts[1]
    if parts[1] in {"cli", "__main__"}:
        return "entry"
    raise AssertionError(f"import of {dotted}: not a layer package of gan ({', '.join(LAYERS)})")


def imported_layers(source: str) -> list[tuple[int, str, str]]:
    """(line, module, layer) for every import of a project module in `source`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] if node.module == "gan" else [node.module]
        else:
            continue
        for name in names:
            layer = layer_of_module(name)
            if layer is not None:
                found.append((node.lineno, name, layer))
    return found


def violations(path: Path, source: str) -> list[str]:
    own = layer_of_file(path)
    return [f"{path.relative_to(REPO)}:{line}: {own} imports {module} ({layer}), a layer above it"
            for line, module, layer in imported_layers(source) if RANK[layer] > RANK[own]]  # fmt: skip


def project_files() -> list[Path]:
    return sorted([*(REPO / "gan").rglob("*.py"), *(REPO / "flows").rglob("*.py")])


def test_every_module_imports_only_its_own_layer_and_those_below():
    found = [v for path in project_files() for v in violations(path, path.read_text())]
    assert not found, "\n".join(found)


def test_every_layer_package_holds_modules():
    for layer in LAYERS:
        modules = [p for p in (REPO / "gan" / layer).glob("*.py") if p.name != "__init__.py"]
        assert modules, f"gan/{layer}/ is empty"


@pytest.mark.parametrize(
    ("importer", "source", "bad"),
    [
        ("gan/core/config.py", "from gan.training.models import build_generator\n", True),
        ("gan/training/step.py", "def f():\n    from gan.evaluation import metrics\n", True),  # nested import
        ("gan/data/prepare.py", "import gan.lifecycle.champion\n", True),
        ("gan/lifecycle/history.py", "from gan import cli\n", True),
        ("gan/outputs/export.py", "import flows.pipeline\n", True),
        ("gan/evaluation/evaluate.py", "from gan.training.sampling import sample_batches\n", False),
        ("gan/cli.py", "from gan.lifecycle import restore\n", False),
        ("flows/pipeline.py", "from gan.cli import main\n", False),
    ],
)
def test_the_rule_catches_an_upward_import(importer, source, bad):
    assert bool(violations(REPO / importer, source)) is bad


def test_a_module_outside_the_layers_is_refused():
    with pytest.raises(AssertionError, match="directly in gan/"):
        layer_of_file(REPO / "gan" / "helpers.py")
    with pytest.raises(AssertionError, match="not a layer package"):
        violations(REPO / "gan" / "core" / "config.py", "from gan.utils import thing\n")
