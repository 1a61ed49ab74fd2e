"""The import graph: the import-linter contracts in pyproject.toml hold (no cycles between
sibling packages, the stages apart from serving, serving apart from training), and no module
imports itself through others (a package and its own modules included, which the sibling
contract does not look at)."""
import subprocess
import sys
from pathlib import Path

import grimp

from tests.conftest import REPO


def test_import_linter_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--config", "pyproject.toml", "--no-cache", "--no-logo"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_no_module_imports_itself_through_others():
    graph = grimp.build_graph("components", "flows", cache_dir=None)
    cycles = sorted((module, imported) for module in graph.modules
                    for imported in graph.find_modules_directly_imported_by(module)
                    if graph.chain_exists(importer=imported, imported=module))
    assert cycles == []
