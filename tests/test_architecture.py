"""The house's shape: the import contract in pyproject.toml holds on the tree, and really fails when
a module imports upward, across independent siblings, in a cycle, or imports Dagster into hrm_core."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hrm_core", "assets", "pipelines")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _copy_tree(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(tree), "PATH": str(LINT_IMPORTS.parent), "LANG": "C.UTF-8"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=tree, env=env, capture_output=True, text=True, timeout=300
    )


def test_every_layer_says_its_job() -> None:
    for init in sorted((ROOT / "hrm_core").glob("*/__init__.py")):
        text = init.read_text().strip()
        assert text.startswith('"""') and len(text) > 40, f"{init} needs a docstring saying its job"


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("hrm_core/sim/metrics.py", "import hrm_core.training.trainer", "One way down"),
        ("hrm_core/core/errors.py", "from hrm_core.data import schema", "One way down"),
        ("hrm_core/training/selection.py", "import dagster", "never imports Dagster"),
        ("hrm_core/sim/baselines.py", "from hrm_core.sim import backtest", "No import cycles"),
    ],
)
def test_the_contract_fails_on_a_forbidden_import(
    tmp_path: Path, module: str, line: str, broken: str
) -> None:
    tree = _copy_tree(tmp_path)
    path = tree / module
    text = path.read_text()
    # After the module's docstring and `from __future__` line, where an import belongs.
    head, future, rest = text.partition("from __future__ import annotations\n")
    path.write_text(head + future + line + "\n" + rest)
    result = _lint(tree)
    assert result.returncode != 0, result.stdout
    assert f"{broken}" in result.stdout and "BROKEN" in result.stdout, result.stdout


def test_the_contract_holds_on_the_tree(tmp_path: Path) -> None:
    result = _lint(_copy_tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
