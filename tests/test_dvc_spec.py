"""dvc.yaml lists what each stage reads, and its outputs do not change between runs on the
same inputs.

A stage's code is what its `emoreason` subcommand imports: the cli function the command
dispatches to (branches on options the command leaves out skipped), then every in-repo import,
transitively, with each package's `__init__.py`; plus the data files that code opens beside
itself (`Path(__file__).parent / "prompts"`) or copies (`components.__file__`: the whole
package). Every such file must be covered by a dep, and every code dep must cover only files
the stage reads, so an edit re-runs exactly the stages it can change. Wall-clock time and
other per-run figures go to `<out>.run.json` metrics that no stage depends on.
"""
import ast
import filecmp
import json
import re
import shlex
from functools import cache
from pathlib import Path

import pytest
import yaml

from components.cli import build_parser
from components.config import FeaturesConfig, Params, SplitConfig
from components.run_stats import SUFFIX, read_run_stats, run_stats_path, write_run_stats
from tests.conftest import REPO

PACKAGE = "components"
CLI = REPO / PACKAGE / "cli.py"


def dvc_stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def paths(entries: list) -> list[str]:
    """dvc.yaml dep/out entries: a path, or a one-key mapping path -> options."""
    return [e if isinstance(e, str) else next(iter(e)) for e in entries or []]


def module_file(name: str) -> Path | None:
    base = REPO.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_names(node: ast.AST) -> set[str]:
    """Dotted names an import could load: `from a.b import c` gives a.b and a.b.c."""
    names = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Import):
            names |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.module and not n.level:
            names |= {n.module} | {f"{n.module}.{a.name}" for a in n.names}
    return names


def data_read(path: Path, tree: ast.AST) -> set[Path]:
    """Folders a module reads as data: `Path(__file__).parent / "x"` and `pkg.__file__`."""
    text = path.read_text()
    found = {path.parent / name for name in
             re.findall(r'Path\(__file__\)(?:\.resolve\(\))?\.parent\s*/\s*"([^"]+)"', text)}
    for n in ast.walk(tree):
        if (isinstance(n, ast.Attribute) and n.attr == "__file__"
                and isinstance(n.value, ast.Name) and module_file(n.value.id)):
            found.add(module_file(n.value.id).parent)
    return found


@cache
def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text())


def files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts} \
        if path.is_dir() else {path}


def closure(names: set[str]) -> set[Path]:
    """Every in-repo file the modules `names` load (and the data they open), transitively."""
    seen: set[Path] = set()
    todo = [n for n in names if n.split(".")[0] == PACKAGE]
    while todo:
        parts = todo.pop().split(".")
        for i in range(1, len(parts) + 1):
            path = module_file(".".join(parts[:i]))
            if path and path not in seen:
                seen.add(path)
                todo += [n for n in imported_names(parsed(path)) if n.split(".")[0] == PACKAGE]
                for folder in data_read(path, parsed(path)):
                    seen |= files_under(folder)
    return seen


def live_imports(node: ast.AST, args) -> set[str]:
    """Imports in a cli function, skipping `if args.x:` branches the parsed command rules out."""
    if isinstance(node, ast.If) and {n.id for n in ast.walk(node.test)
                                     if isinstance(n, ast.Name)} == {"args"}:
        alive = eval(compile(ast.Expression(node.test), "<cmd>", "eval"), {}, {"args": args})
        return set().union(set(), *(live_imports(n, args)
                                    for n in (node.body if alive else node.orelse)))
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return imported_names(node)
    return set().union(set(), *(live_imports(n, args) for n in ast.iter_child_nodes(node)))


def stage_reads(cmd: str) -> set[Path]:
    """The files `cmd` (an `emoreason ...` command) runs: cli.py, its module-level imports, the
    dispatched function and the cli functions it calls, and all they import."""
    argv = shlex.split(cmd)
    assert argv[0] == "emoreason", cmd
    args = build_parser().parse_args(argv[1:])
    tree = parsed(CLI)
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    names = set().union(*(imported_names(n) for n in tree.body
                          if isinstance(n, (ast.Import, ast.ImportFrom))))
    todo, done = [args.func.__name__], set()
    while todo:
        name = todo.pop()
        if name in done:
            continue
        done.add(name)
        names |= live_imports(functions[name], args)
        todo += [c.func.id for c in ast.walk(functions[name])
                 if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
                 and c.func.id in functions]
    return {CLI} | closure(names)


def covered(path: Path, deps: list[str]) -> bool:
    return any(path == REPO / d or REPO / d in path.parents for d in deps)


STAGES = sorted(dvc_stages())


@pytest.mark.parametrize("stage", STAGES)
def test_every_file_the_stage_runs_is_a_dep(stage):
    spec = dvc_stages()[stage]
    missing = sorted(p.relative_to(REPO).as_posix() for p in stage_reads(spec["cmd"])
                     if not covered(p, paths(spec["deps"])))
    assert not missing, f"{stage} reads these files but does not list them in deps: {missing}"


@pytest.mark.parametrize("stage", STAGES)
def test_every_code_dep_is_read_by_the_stage(stage):
    """A folder dep only when the stage reads every file in it: else an edit to a file the
    stage never loads would re-run it (and every stage after it)."""
    spec = dvc_stages()[stage]
    reads = stage_reads(spec["cmd"])
    for dep in paths(spec["deps"]):
        if dep.split("/")[0] != PACKAGE:
            continue
        unread = sorted(p.relative_to(REPO).as_posix()
                        for p in files_under(REPO / dep) - reads)
        assert (REPO / dep).exists() and not unread, (
            f"{stage}: dep {dep} covers files the stage does not read: {unread}")


def test_the_walk_finds_lazy_imports_data_files_and_skips_other_options():
    distill = stage_reads("emoreason distill")
    assert REPO / "components/distill/prompts/teacher_v1.yaml" in distill  # read beside prompts.py
    assert REPO / "components/distill/backends/openai_chat.py" in distill  # imported in a function
    assert REPO / "components/distill/lexicon.py" in stage_reads("emoreason sft")
    assert REPO / "components/config.py" in stage_reads("emoreason sft")
    evaluate = stage_reads("emoreason evaluate")
    assert REPO / "components/evaluate/any_corpus.py" not in evaluate  # only with --model
    assert REPO / "components/evaluate/any_corpus.py" in stage_reads(
        "emoreason evaluate --model m --corpus demo --out o")
    # register logs the whole package as the served model's code
    assert files_under(REPO / PACKAGE) <= stage_reads("emoreason register")


def outputs(spec: dict) -> list[str]:
    return paths(spec.get("outs")) + paths(spec.get("metrics")) + paths(spec.get("plots"))


def test_run_stats_are_metrics_beside_an_output_that_nothing_depends_on():
    stages = dvc_stages()
    declared = {}
    for name, spec in stages.items():
        for entry in spec.get("metrics") or []:
            path, options = (entry, {}) if isinstance(entry, str) else next(iter(entry.items()))
            if path.endswith(SUFFIX):
                assert options.get("cache") is False, (name, path)
                folder = Path(path.removesuffix(SUFFIX))  # the stage's output folder
                assert any(Path(o) == folder or folder in Path(o).parents
                           for o in paths(spec["outs"])), (name, path)
                declared[path] = name
    assert set(declared.values()) >= {"features", "distill", "sft", "rl"}
    for name, spec in stages.items():
        for dep in paths(spec["deps"]):
            assert not any(Path(p) == Path(dep) or Path(dep) in Path(p).parents
                           for p in declared), f"{name} depends on run stats via {dep}"


def test_run_stats_live_beside_the_output_folder(tmp_path):
    out = tmp_path / "data" / "features"
    assert run_stats_path(out) == tmp_path / "data" / "features.run.json"
    assert read_run_stats(out) == {}
    write_run_stats(out, {"seconds": 2.5})
    write_run_stats(out, {"seconds": 1.25, "cache_hits": 3})  # replaces the earlier run's
    assert read_run_stats(out) == {"cache_hits": 3, "seconds": 1.25}
    assert not out.exists()  # nothing inside the output folder


def test_every_metrics_and_plots_file_is_declared_for_dvc():
    stages = dvc_stages()
    evaluate = stages["evaluate"]
    assert "reports/evaluate/metrics.json" in paths(evaluate["metrics"])
    assert "reports/evaluate/plots" in paths(evaluate["plots"])
    for name, spec in stages.items():
        for entry in (spec.get("metrics") or []) + (spec.get("plots") or []):
            options = {} if isinstance(entry, str) else next(iter(entry.values()))
            assert options.get("cache") is False, f"{name}: {entry} (git-tracked, diffable)"


def test_checkpoints_survive_a_rerun_outside_every_output():
    """`dvc repro` deletes a stage's outputs before running it: unfinished training lives in
    `checkpoint_dir`, outside them, so a killed run resumes; no `persist`, which would turn off
    DVC's run cache for the stage."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    stages = dvc_stages()
    for stage in ("sft", "rl"):
        checkpoints = Path(params[stage]["checkpoint_dir"])
        for spec in stages.values():
            for out in outputs(spec):
                assert not (checkpoints == Path(out) or Path(out) in checkpoints.parents), out
    for name, spec in stages.items():
        for entry in (spec.get("outs") or []):
            assert isinstance(entry, str) or not next(iter(entry.values())).get("persist"), name


def test_params_paths_a_stage_reads_are_its_deps_or_outs():
    """Every pipeline path in a stage's params (another stage's output) is a dep of it."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    stages = dvc_stages()
    produced = {p for spec in stages.values() for p in outputs(spec)}

    def values(node):
        if isinstance(node, dict):
            for v in node.values():
                yield from values(v)
        elif isinstance(node, list):
            for v in node:
                yield from values(v)
        elif isinstance(node, str):
            yield node

    for name, spec in stages.items():
        for key in paths(spec.get("params")):
            section = params
            for part in key.split("."):
                section = section[part]
            for value in values(section):
                pipeline = [p for p in produced if value == p or Path(p) in Path(value).parents]
                if not pipeline:
                    continue
                mine = any(Path(o) == Path(value) or Path(o) in Path(value).parents
                           for o in outputs(spec))
                assert mine or covered(REPO / value, paths(spec["deps"])), (name, key, value)


@pytest.fixture(scope="module")
def demo_corpus(tmp_path_factory):
    from tests.demo_fixture import demo_manifest

    root = tmp_path_factory.mktemp("demo")
    demo_manifest(root, 8, 4, 3, SplitConfig(train=0.5, dev=0.0, test=0.5))
    return root


def same_tree(a: Path, b: Path) -> list[str]:
    """Files that differ (or exist on one side only) between two folders."""
    cmp, differ = filecmp.dircmp(a, b), []
    differ += cmp.left_only + cmp.right_only + cmp.diff_files + cmp.funny_files
    for sub in cmp.common_dirs:
        differ += [f"{sub}/{f}" for f in same_tree(a / sub, b / sub)]
    return differ


def test_features_and_distill_outputs_are_identical_run_to_run(demo_corpus, tmp_path):
    """The second run of each stage hits its cache and takes another time: the outputs stay
    byte for byte the same (so their DVC hashes do), the difference is in `<out>.run.json`."""
    from components.distill.stage import run_distill
    from components.features.stage import run_features

    params = Params()
    params.features = FeaturesConfig(cache_dir=str(tmp_path / "cache"), workers=1)
    params.distill.cache = str(tmp_path / "cache" / "rationales.jsonl")
    manifest = demo_corpus / "manifest.parquet"
    for run in ("first", "second"):
        out = tmp_path / run
        run_features(params, manifest, out / "features", None)
        run_distill(params, out / "features" / "features.parquet", manifest, "template",
                    out / "distill")
    for stage in ("features", "distill"):
        first, second = tmp_path / "first" / stage, tmp_path / "second" / stage
        assert not same_tree(first, second), (stage, same_tree(first, second))
        summary = json.loads((first / "summary.json").read_text())
        assert not {"seconds", "real_time_factor", "cache_hits", "backend_stats"} & set(summary)
        assert read_run_stats(first)["seconds"] >= 0
    assert read_run_stats(tmp_path / "first" / "distill")["cache_hits"] == 0
    assert read_run_stats(tmp_path / "second" / "distill")["cache_hits"] > 0
