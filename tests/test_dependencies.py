"""What the code imports is declared in pyproject.toml, and requirements/lock.txt (what `make
install` installs) pins every declared distribution inside its declared range."""
import ast
import functools
import sys
import tomllib
from importlib.metadata import distributions, packages_distributions

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO

FIRST_PARTY = {"components", "flows", "tests", "__future__"}


def imported_modules(*folders: str) -> set[str]:
    """Top-level names of the absolute imports in the folders' Python files (lazy ones too)."""
    names = set()
    for folder in folders:
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - FIRST_PARTY


def declared(*extras: str) -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    texts = project["dependencies"] + [r for e in extras for r in project["optional-dependencies"][e]]
    return {canonicalize_name(r.name): r for r in map(Requirement, texts)}


top_level_distributions = functools.cache(packages_distributions)


@functools.cache
def owners(module: str) -> set[str]:
    """The installed distributions that provide a top-level module."""
    found = top_level_distributions().get(module)
    if not found:  # a top-level extension module (parselmouth.cpython-*.so) is not mapped there
        found = [d.metadata["Name"] for d in distributions()
                 if any(line.startswith(f"{module}.") for line in (d.read_text("RECORD") or "").splitlines())]
    return {canonicalize_name(d) for d in found}


def undeclared(modules: set[str], names: set[str]) -> dict[str, set[str]]:
    return {m: owners(m) for m in sorted(modules) if not owners(m) & names}


def test_every_imported_distribution_is_declared():
    assert undeclared(imported_modules("components", "flows"), set(declared())) == {}
    assert undeclared(imported_modules("tests"), set(declared("test"))) == {}


def test_the_lock_pins_every_declared_distribution_inside_its_range():
    pins = {}
    for line in (REPO / "requirements" / "lock.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    for name, requirement in declared("test").items():
        assert name in pins, f"{name} is declared in pyproject.toml but not pinned in the lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (requirement, pins[name])
