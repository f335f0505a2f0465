"""The layers of the project import downwards only: flows -> tasks -> pipeline -> ssh_model."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What each layer may not import (top-level package names), at module level or inside functions.
FORBIDDEN = {
    "ssh_model": {"prefect", "ray", "mlflow", "pipeline", "tasks", "flows"},
    "pipeline": {"prefect", "tasks", "flows"},
    "tasks": {"flows", "mlflow", "ray"},  # Ray and MLflow work belong to pipeline/
}


def imported_packages(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_given_a_layer_then_none_of_its_modules_imports_a_layer_above_it_or_a_forbidden_framework(layer):
    modules = sorted((ROOT / layer).rglob("*.py"))
    assert modules
    offending = {str(path.relative_to(ROOT)): sorted(imported_packages(path) & FORBIDDEN[layer]) for path in modules}
    assert {path: found for path, found in offending.items() if found} == {}


def test_given_the_batch_fetch_stage_when_imported_then_torch_and_ray_are_not():
    # The fetch tasks run in many light Ray workers; importing torch there costs each one seconds and memory.
    code = "import sys, pipeline.batch_stages; print(sorted({'torch', 'ray'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
