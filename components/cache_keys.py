"""Cache keys that follow the code: a hash of the modules that compute a cached value.

A cached result is only valid for the code that produced it. Keying a cache by the source of
the producing modules, and of every module of the same package they import (directly or not),
recomputes after any change to that code, with no version constant to remember to bump.
Comments, formatting and docstrings are left out of the hash (it is taken over the syntax
tree without string statements), so editing them keeps the cache.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
from pathlib import Path


def _source_file(module: str) -> Path | None:
    """The .py file of `module` (a package's __init__.py), found without importing it."""
    top, _, rest = module.partition(".")
    spec = importlib.util.find_spec(top)
    if spec is None:
        return None
    if not spec.submodule_search_locations:
        return Path(spec.origin) if not rest and spec.origin else None
    base = Path(next(iter(spec.submodule_search_locations)))
    base = base.joinpath(*rest.split(".")) if rest else base
    for path in (base.with_name(base.name + ".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported(tree: ast.Module, module: str, is_package: bool) -> set[str]:
    """The modules of `module`'s top-level package that it imports, anywhere in its body."""
    top = module.partition(".")[0]
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) \
                if node.level else node.module
            for alias in node.names:  # a submodule, or a name defined in `base`
                sub = f"{base}.{alias.name}"
                found.add(sub if _source_file(sub) is not None else base)
    return {name for name in found if name.partition(".")[0] == top}


class _DropStrings(ast.NodeTransformer):
    """Removes string statements (docstrings): they do not change what the code computes."""

    def visit_Expr(self, node: ast.Expr) -> ast.Expr | None:
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return None
        return node


@functools.cache
def code_hash(*modules: str) -> str:
    """sha256 over the syntax trees of `modules` and of the modules of their package that they
    import, directly or not (by import name, e.g. 'components.features.extract')."""
    trees: dict[str, str] = {}
    todo = list(modules)
    while todo:
        module = todo.pop()
        if module in trees:
            continue
        path = _source_file(module)
        if path is None:
            raise ModuleNotFoundError(f"no Python source for module {module!r}")
        tree = ast.parse(path.read_text(), str(path))
        todo += sorted(_imported(tree, module, path.name == "__init__.py"))
        trees[module] = ast.dump(_DropStrings().visit(tree))
    digest = hashlib.sha256()
    for module in sorted(trees):
        digest.update(f"{module}\0{trees[module]}\0".encode())
    return digest.hexdigest()


def run_key(spec: dict, inputs: list[Path], module: str) -> str:
    """16 hex digits naming one training run: its settings (`spec`, JSON-able), the content
    of every input file (folders: every file in them) and the code of `module`, so a re-run
    of the same training finds its checkpoints and any change starts afresh."""
    files: list[Path] = []
    for path in map(Path, inputs):
        files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    contents = {}
    for path in files:
        with path.open("rb") as fh:
            contents[str(path)] = hashlib.file_digest(fh, "sha256").hexdigest()
    payload = json.dumps({"spec": spec, "inputs": contents, "code": code_hash(module)},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
