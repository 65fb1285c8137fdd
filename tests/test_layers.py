"""The packages' layers, read from every module's imports (ast), and kept cheap to start.

- ``model/`` outside ``model/training/`` never imports ``model.training``;
- ``index/`` imports neither ``model`` nor ``service``;
- ``service/`` reaches ``model.training`` only inside the functions of the
  `train`, `eval` and `data` commands, so serving never loads it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Functions of service/commands.py that run the training commands (and only those).
TRAINING_COMMAND_FUNCTIONS = {
    "train_config",
    "_model_part",
    "_training_errors",
    "cmd_train",
    "cmd_eval",
    "_check_release",
    "cmd_data_features",
    "cmd_data_compare_windows",
    "cmd_data_spoken",
    "cmd_data_synthetic",
    "cmd_data_shapes",
    "_describe_recipe",
}


def _package_of(path: Path) -> list[str]:
    """The dotted package a module file is in (``model/training/x.py`` -> model, training)."""
    return list(path.relative_to(REPO).parent.parts)


def _imports(path: Path) -> list[tuple[str, str | None]]:
    """(imported module, enclosing function or None at module level) for every import,
    relative imports resolved to absolute names. The function is the outermost one, so a
    nested helper counts as its command's."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _package_of(path)
    found: list[tuple[str, str | None]] = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, function or child.name)
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = package[: len(package) - child.level + 1] if child.level else []
                module = ".".join([*base, *([child.module] if child.module else [])])
                found.extend((f"{module}.{alias.name}", function) for alias in child.names)
            visit(child, function)

    visit(tree, None)
    return found


def _modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def _is(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_inference_never_imports_training():
    inference = [p for p in _modules("model") if "training" not in p.relative_to(REPO).parts]
    assert len(inference) > 10
    bad = [
        f"{p.relative_to(REPO)}: {m}"
        for p in inference
        for m, _ in _imports(p)
        if _is(m, "model.training")
    ]
    assert not bad, f"model/ (inference) imports model.training: {bad}"


def test_index_stands_alone():
    bad = [
        f"{p.relative_to(REPO)}: {m}"
        for p in _modules("index")
        for m, _ in _imports(p)
        if _is(m, "model") or _is(m, "service")
    ]
    assert not bad, f"index/ must not import model/ or service/: {bad}"


def test_service_reaches_training_only_in_the_training_commands():
    seen = []
    for path in _modules("service"):
        for module, function in _imports(path):
            if not _is(module, "model.training"):
                continue
            where = f"{path.relative_to(REPO)}:{function or '<module>'}: {module}"
            assert path.name == "commands.py", f"only service/commands.py may: {where}"
            assert function in TRAINING_COMMAND_FUNCTIONS, f"not in a training command: {where}"
            seen.append(where)
    assert seen, "the training commands should import model.training (inside their functions)"


def test_the_command_line_starts_without_torch_or_training():
    code = (
        "import sys; from service.cli import build_parser; build_parser(); "
        "heavy = [m for m in ('torch', 'transformers', 'model.training') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", f"`mmembed --help` would load {out.stdout.strip()}"


def test_the_file_writer_loads_neither_faiss_nor_numpy():
    """model/ writes its checkpoints and caches through index.atomic: importing it must not
    pull in the index's FAISS (its import logs at INFO and costs a tenth of a second)."""
    code = (
        "import sys; import index.atomic; "
        "print([m for m in ('faiss', 'numpy', 'index.store') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
