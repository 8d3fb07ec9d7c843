"""The README's Architecture table holds: core ← trainer ← host ← CLI, no module imports one
above it (imports inside functions included); `pgjax/__init__.py`, the package's front, is the
one module that names every layer."""

import ast
from pathlib import Path

import pgjax

PACKAGE = Path(pgjax.__file__).parent
LAYERS = {
    "core": ("config", "envs", "suites", "policies", "rollout", "returns", "losses",
             "estimators", "exact"),
    "trainer": ("components", "train", "evaluate"),
    "host": ("stats", "records", "runs", "plots", "render", "checkpoint", "loggers", "signals",
             "experiment", "sweep"),
    "cli": ("cli",),
}
RANK = {name: rank for rank, names in enumerate(LAYERS.values()) for name in names}
FILES = sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py")


def module_of(path: Path) -> str:
    """pgjax.<name> that a file belongs to in the table (a package by its folder)."""
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def imported(path: Path) -> set[str]:
    """The pgjax modules a file imports, anywhere in it, by their table name."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[0] == "pgjax":
                names.update([parts[1]] if len(parts) > 1 else [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[1] for a in node.names
                         if a.name.startswith("pgjax."))
    return names


def test_every_module_has_a_layer():
    assert {module_of(p) for p in FILES} == set(RANK)


def test_no_module_imports_one_above_it():
    upward = []
    for path in FILES:
        here = module_of(path)
        upward += [f"{path.relative_to(PACKAGE)} ({here}) imports {name}"
                   for name in sorted(imported(path)) if RANK[name] > RANK[here]]
    assert not upward, upward


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    path = tmp_path / "x.py"
    path.write_text("def f():\n    from pgjax.experiment import train_run\n"
                    "import pgjax.sweep.files\nfrom pgjax import cli, config\n")
    assert imported(path) == {"experiment", "sweep", "cli", "config"}
