"""Which of this package's source files a pipeline stage runs: one answer for DVC and for resume.

`python -m gan STAGE` runs `gan/__main__.py`, then `gan/cli.py`, whose `STAGES` table maps
the stage to a function that imports the stage's modules lazily. A stage's code is therefore

- `gan/__init__.py`, `gan/__main__.py`, `gan/cli.py`;
- every `gan` module imported at the top of `cli.py`, in `main()`, or in the stage's function
  (and in any `cli.py` function those call);
- and, transitively, every `gan` module those import, anywhere in their files (nested imports
  included: conservative, a module counts as soon as the file names it), with the `__init__.py` of each
  layer package on the way (`gan/training/__init__.py` runs before `gan/training/train.py`).

`tests/test_stage_deps.py` checks that `dvc.yaml` lists exactly these files as each stage's code
deps (so `dvc repro` never calls a stage current after its code changed), and the trainer's
resume fingerprint hashes the same files (`stage_code_files("train")`). Found by parsing the
source (`ast`), not by importing it: cheap, and nothing runs.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # gan/, above this module's layer package
PACKAGE = PACKAGE_DIR.name
CLI = PACKAGE_DIR / "cli.py"
ENTRY_FILES = ("__init__.py", "__main__.py", "cli.py")


def _module_files(dotted: str) -> list[Path]:
    """`gan.training.train` -> gan/training/__init__.py and gan/training/train.py: importing a module runs
    every package `__init__` above it. Empty for anything outside this package or not a file of it."""
    parts = dotted.split(".")
    if parts[0] != PACKAGE or len(parts) < 2:
        return []
    found = []
    for depth in range(2, len(parts) + 1):
        base = PACKAGE_DIR.joinpath(*parts[1:depth])
        init, module = base / "__init__.py", base.with_suffix(".py")
        if init.exists():
            found.append(init)
        elif module.exists():
            found.append(module)
            break
        else:
            break
    return found


def _imports(node: ast.AST) -> set[Path]:
    """This package's module files imported anywhere under `node`."""
    found: set[Path] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Import):
            names = [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
            # `from gan.core import atomic` names a module; `from gan.training.train import train` names one too.
            names = [n.module] + [f"{n.module}.{a.name}" for a in n.names]
        else:
            continue
        found.update(p for name in names for p in _module_files(name))
    return found


@functools.cache
def _file_imports(path: Path) -> frozenset[Path]:
    return frozenset(_imports(ast.parse(path.read_text(), filename=str(path))))


def _closure(roots: set[Path]) -> set[Path]:
    seen: set[Path] = set()
    todo = list(roots)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if path != CLI and path.name != CLI.name:  # cli.py: only its stage's functions count, never the whole file
            todo.extend(_file_imports(path) - seen)
    return seen


def _cli_functions() -> tuple[ast.Module, dict[str, ast.FunctionDef], dict[str, str]]:
    tree = ast.parse(CLI.read_text(), filename=str(CLI))
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    stages: dict[str, str] = {}
    for n in tree.body:
        if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "STAGES" for t in n.targets):
            for key, value in zip(n.value.keys, n.value.values, strict=True):
                stages[key.value] = value.id
    return tree, functions, stages


def stage_names() -> list[str]:
    """The stages `python -m gan STAGE` knows, in `cli.STAGES` order."""
    return list(_cli_functions()[2])


def stage_code_files(stage: str) -> list[Path]:
    """Absolute paths of the package files `python -m gan STAGE` can run, sorted."""
    tree, functions, stages = _cli_functions()
    if stage not in stages:
        raise KeyError(f"{CLI}: no stage {stage!r} in STAGES (known: {', '.join(stages)})")
    top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    roots = {PACKAGE_DIR / f for f in ENTRY_FILES if (PACKAGE_DIR / f).exists()}
    roots -= {CLI}  # cli.py is read function by function below, never as a whole file
    # main() only: what it calls serves other commands (`evaluate --samples`), the STAGES entry serves this one.
    for node in [*top_level, functions["main"], *_called(functions, [stages[stage]])]:
        roots |= _imports(node)
    return sorted(_closure(roots) | {CLI})


def _called(functions: dict[str, ast.FunctionDef], names: list[str]) -> list[ast.FunctionDef]:
    """These cli.py functions and every cli.py function they call, directly or not."""
    found: dict[str, ast.FunctionDef] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found[name] = functions[name]
        todo += [n.func.id for n in ast.walk(found[name])
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in functions]  # fmt: skip
    return list(found.values())


def stage_code_sha256(stage: str) -> str:
    """SHA-256 of the bytes of `stage_code_files(stage)`, in order: what the trainer's resume fingerprint holds."""
    h = hashlib.sha256()
    for path in stage_code_files(stage):
        h.update(path.read_bytes())
    return h.hexdigest()


def stage_code_deps(stage: str, root: Path = PACKAGE_DIR.parent) -> list[str]:
    """`stage_code_files` as the repo-relative POSIX paths `dvc.yaml` lists."""
    return [p.relative_to(root).as_posix() for p in stage_code_files(stage)]


if __name__ == "__main__":  # print what dvc.yaml should list, per stage
    for name in stage_names():
        print(f"{name}:")
        for dep in stage_code_deps(name):
            print(f"  - {dep}")
