"""The layer graph of docs/ARCHITECTURE.md holds: import-linter's contracts in pyproject.toml
pass on the package, and fail on a copy of it with one upward import added (so the contracts
are live, not vacuous)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """lint-imports on the package under ``root`` with the repository's contracts."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": ""},
        capture_output=True,
        text=True,
    )


def test_contracts_hold():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    "module, upward_import",
    [
        ("data/coco.py", "import vitdet.engine.runner"),  # data -> engine
        ("modeling/vit.py", "import vitdet.checkpoint"),  # modeling -> checkpoint
        ("predictor.py", "import vitdet.engine"),  # inference -> trainer
        ("engine/runner.py", "import vitdet.demo"),  # trainer -> inference
    ],
)
def test_an_upward_import_breaks_a_contract(tmp_path, module, upward_import):
    shutil.copytree(REPO / "vitdet", tmp_path / "vitdet", ignore=shutil.ignore_patterns("*.pyc"))
    path = tmp_path / "vitdet" / module
    path.write_text(path.read_text() + f"\n{upward_import}  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0 and "BROKEN" in result.stdout.upper(), result.stdout
