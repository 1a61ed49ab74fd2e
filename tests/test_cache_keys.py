"""Caches keyed by code: a change to the code that computed a cached value recomputes it, a
change elsewhere (or to comments and docstrings) keeps it."""
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from components import cache_keys
from components.cache_keys import code_hash
from components.distill.cache import GenerationCache
from components.distill.records import ClipCues, TeacherRequest
from components.distill.template import TemplateTeacher
from components.features import extract as extract_mod
from components.features import prosody
from components.features.extract import ClipJob, clip_f0_median, extract_clip

PACKAGE = {
    "__init__.py": "",
    "producer.py": '"""Computes."""\nfrom keyed_pkg import helper\nfrom .maths import twice\n\n\n'
                   'def value(x):\n    """Doc."""\n    return twice(helper.base(x))  # note\n',
    "helper.py": "def base(x):\n    return x + 1\n",
    "maths.py": "def twice(x):\n    return 2 * x\n",
    "unrelated.py": "def other():\n    return 0\n",
}


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A throwaway package `keyed_pkg` on sys.path; returns its folder."""
    folder = tmp_path / "keyed_pkg"
    folder.mkdir()
    for name, text in PACKAGE.items():
        (folder / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    code_hash.cache_clear()
    yield folder
    code_hash.cache_clear()


def _rehash(folder: Path, name: str, text: str) -> str:
    (folder / name).write_text(text)
    code_hash.cache_clear()
    return code_hash("keyed_pkg.producer")


def test_the_hash_follows_the_code_and_the_modules_it_imports(package):
    before = code_hash("keyed_pkg.producer")
    assert before == code_hash("keyed_pkg.producer") and len(before) == 64
    # comments, formatting and docstrings do not change what is computed
    reworded = PACKAGE["producer.py"].replace('"""Doc."""', '"""Reworded."""') \
        .replace("# note", "# another note").replace("(x):", "( x ):")
    assert _rehash(package, "producer.py", reworded) == before
    assert _rehash(package, "unrelated.py", "def other():\n    return 1\n") == before
    # an imported module (absolute and relative imports) is part of the code
    changed_helper = _rehash(package, "helper.py", "def base(x):\n    return x + 2\n")
    assert changed_helper != before
    changed_maths = _rehash(package, "maths.py", "def twice(x):\n    return x * 2\n")
    assert changed_maths not in (before, changed_helper)
    edited = PACKAGE["producer.py"].replace("return twice", "return 1 + twice")
    assert _rehash(package, "producer.py", edited) not in (before, changed_helper, changed_maths)


def test_a_missing_module_is_an_error(package):
    with pytest.raises(ModuleNotFoundError, match="keyed_pkg.absent"):
        code_hash("keyed_pkg.absent")


@pytest.fixture
def edit(tmp_path, monkeypatch):
    """edit(module): code_hash sees `module` with one more statement, as after a code fix."""
    real = cache_keys._source_file
    edits = {}
    monkeypatch.setattr(cache_keys, "_source_file", lambda module: edits.get(module)
                        or real(module))

    def edit_module(module: str) -> None:
        copy = tmp_path / "edited" / f"{module}.py"
        copy.parent.mkdir(exist_ok=True)
        copy.write_text(real(module).read_text() + "\nEDITED = True\n")
        edits[module] = copy
        code_hash.cache_clear()

    code_hash.cache_clear()
    yield edit_module
    code_hash.cache_clear()


def _tone(path: Path) -> str:
    t = np.arange(8000) / 16000
    sf.write(path, (0.2 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16000)
    return str(path)


def test_features_cached_before_a_code_change_are_not_returned_after_it(tmp_path, monkeypatch,
                                                                          edit):
    job = ClipJob("u1", _tone(tmp_path / "u1.wav"), reference="one two", frames=False,
                  cache_dir=str(tmp_path / "cache"))
    runs = {"measure": 0, "f0": 0}  # each run of the (stubbed) code gives a new value

    def measure(job):
        runs["measure"] += 1
        return {"energy_dbfs": float(runs["measure"])}, None

    def f0_track(audio, sr, *args):
        runs["f0"] += 1
        return types.SimpleNamespace(f0_hz=np.full(10, 100.0 * runs["f0"]))

    monkeypatch.setattr(extract_mod, "_measure", measure)
    monkeypatch.setattr(prosody, "f0_track", f0_track)
    assert extract_clip(job)["energy_dbfs"] == 1.0
    assert clip_f0_median(job)["f0_median_hz"] == 100.0
    key = extract_clip(job)["cache_key"]
    edit("components.features.captions")  # not used to measure a clip
    assert extract_clip(job)["cache_key"] == key
    assert extract_clip(job)["energy_dbfs"] == 1.0
    assert clip_f0_median(job)["f0_median_hz"] == 100.0
    assert runs == {"measure": 1, "f0": 1}

    edit("components.features.prosody")  # imported by the measuring code
    assert extract_clip(job)["energy_dbfs"] == 2.0
    assert clip_f0_median(job)["f0_median_hz"] == 200.0
    edit("components.audio_io")  # imported through prosody as well as directly
    assert extract_clip(job)["energy_dbfs"] == 3.0
    assert clip_f0_median(job)["f0_median_hz"] == 300.0


def test_template_rationales_cached_before_a_code_change_are_rewritten_after_it(tmp_path,
                                                                                edit):
    cues = ClipCues("c1", "The door is open.", "sad", ("sad", "happy"),
                    levels={"pitch_level": "low", "energy_level": "low"})
    requests = [TeacherRequest("c1", (), cues)]
    cache = GenerationCache(tmp_path / "gen.jsonl")
    teacher = TemplateTeacher()
    first = cache.generate(teacher, requests)
    assert cache.generate(teacher, requests) == first and cache.hits == 1
    edit("components.distill.verify")  # checks rationales, does not write them
    assert cache.generate(teacher, requests) == first and cache.hits == 2
    edit("components.distill.lexicon")  # the template's wording comes from it
    cache.generate(teacher, requests)
    assert cache.hits == 2
    assert len((tmp_path / "gen.jsonl").read_text().splitlines()) == 2
