"""The layering of DESIGN §2 is checked by import-linter, and the check really fails when a
stage imports another stage, the kernel imports the project, or a stage imports Prefect."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("kernel", "sources", "exporters", "storage", "billing", "notify", "monitoring",
            "flows", "deployments", "portal", "tenant_export")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _copy_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir()
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tree / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_tree_as_committed_keeps_every_contract(tmp_path: Path) -> None:
    result = _lint(_copy_tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "line", "complaint"), [
    ("storage/objects.py", "import sources.catalog", "storage is not allowed to import sources"),
    ("exporters/csv_writer.py", "import storage.links",
     "exporters is not allowed to import storage"),
    ("sources/catalog.py", "import flows.context", "sources is not allowed to import flows"),
    ("kernel/ids.py", "import storage.links", "kernel is not allowed to import storage"),
    ("billing/rules.py", "import exporters.names", "billing is not allowed to import exporters"),
    ("exporters/names.py", "import prefect", "exporters is not allowed to import prefect"),
    ("notify/email.py", "import storage.audit", "notify is not allowed to import storage"),
    ("portal/__init__.py", "import deployments", "portal is not allowed to import deployments"),
    ("flows/context.py", "import portal", "flows is not allowed to import portal"),
])
def test_a_forbidden_import_breaks_the_lint(tmp_path: Path, module: str, line: str,
                                            complaint: str) -> None:
    tree = _copy_tree(tmp_path)
    target = tree / module
    target.write_text(target.read_text() + f"\n{line}  # planted by the test\n")
    result = _lint(tree)
    assert result.returncode != 0, result.stdout
    assert complaint in " ".join(result.stdout.split()), result.stdout
