"""Registry and pyfunc: the logged model is self-contained, pinned and answers every row on
its own; the register stage moves `champion` only through the gate, with the reason in tags
and result.json (SQLite MLflow store of the test session)."""
import ast
import base64
import io
import json
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution, version
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from components.config import Params
from components.register.gate import Scores, decide
from components.register.stage import read_scores, run_register
from components.serve.pyfunc import (
    OUTPUT_COLUMNS,
    example_wav,
    log_pyfunc,
    serving_requirements,
)
from tests.conftest import REPO
from tests.tiny_models import save_tiny_model_folder

LABELS = ["neutral", "happy", "sad", "angry"]
EVAL = {"corpus": "demo", "split": "test", "labels": LABELS}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A merged tiny model folder (with training records beside it, as `sft` leaves them) and
    an adapter folder."""
    root = tmp_path_factory.mktemp("register_models")
    merged = save_tiny_model_folder(root / "merged", LABELS)
    (merged / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    (merged / "checkpoints" / "checkpoint-1" / "optimizer.pt").write_bytes(b"\0" * 1024)
    (merged / "eval.json").write_text("{}\n")
    return merged, save_tiny_model_folder(root / "adapter", LABELS, seed=1, merged=False)


def _b64(audio: np.ndarray, sr: int, fmt: str = "WAV") -> str:
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


# ---------------------------------------------------------------- the gate, as a function
def _scores(value, grounding=0.8, evaluation=None):
    return Scores(value, grounding, dict(EVAL if evaluation is None else evaluation))


@pytest.mark.parametrize("new,champion,promoted,reason", [
    (_scores(0.5), None, True, "no champion yet"),
    (_scores(0.6), _scores(0.5), True, "0.6000 beats champion v1's 0.5000"),
    (_scores(0.5), _scores(0.5), False, "does not beat"),
    (_scores(0.4), _scores(0.5), False, "does not beat"),
    (_scores(0.6, 0.76), _scores(0.5, 0.80), True, "grounding 0.7600 vs 0.8000"),
    (_scores(0.6, 0.70), _scores(0.5, 0.80), False, "grounding dropped by 0.1000"),
    (_scores(0.6, None), _scores(0.5, 0.80), False, "grounding was not measured"),
    (_scores(0.6, 0.1), _scores(0.5, None), True, "has no grounding to compare"),
    (_scores(0.6), _scores(None), False, "has no recorded annotator_aware_macro_f1"),
    (_scores(0.9, evaluation={**EVAL, "corpus": "ravdess"}), _scores(0.5), False,
     "not comparable: champion v1 was evaluated on corpus demo"),
])
def test_gate_decisions(new, champion, promoted, reason):
    decision = decide(new, champion, "1" if champion else None, "annotator_aware_macro_f1", 0.05)
    assert decision.promoted is promoted and decision.name == ("promoted" if promoted else "kept")
    assert reason in decision.reason


def test_scores_read_back_from_tags_under_the_current_gate_metric():
    tags = {"emoreason.gate_metric": "ua", "emoreason.gate_value": "0.5",
            "emoreason.metric.ua": "0.5", "emoreason.metric.macro_f1": "0.42",
            "emoreason.grounding": "none", "emoreason.evaluation": json.dumps(EVAL)}
    assert Scores.from_tags(tags, "ua") == Scores(0.5, None, EVAL)
    assert Scores.from_tags(tags, "macro_f1").gate_value == 0.42  # gated on ua before
    assert Scores.from_tags(tags, "wa").gate_value is None


def _metrics(path: Path, value: float | None, grounding: float | None = 0.8,
             corpus: str = "demo") -> Path:
    sft = {"n": 20, "ua": 0.4, "annotator_aware_macro_f1": value, "grounding": grounding,
           "ci": {"ua": [0.3, 0.5]}}
    path.write_text(json.dumps({"corpus": corpus, "split": "test", "labels": LABELS,
                                "systems": {"majority": {"n": 20, "ua": 0.25}, "sft": sft}}))
    return path


def test_read_scores_names_what_is_missing(tmp_path):
    scores, scalars = read_scores(_metrics(tmp_path / "m.json", 0.5), "sft",
                                  "annotator_aware_macro_f1")
    assert scores == Scores(0.5, 0.8, EVAL) and scalars["n"] == 20.0 and "ci" not in scalars
    with pytest.raises(ValueError, match=r"no system 'rl' \(has \['majority', 'sft'\]\)"):
        read_scores(tmp_path / "m.json", "rl", "ua")
    with pytest.raises(ValueError, match="no finite 'jsd'"):
        read_scores(tmp_path / "m.json", "sft", "jsd")
    with pytest.raises(ValueError, match="no finite 'annotator_aware_macro_f1'"):
        read_scores(_metrics(tmp_path / "none.json", None), "sft", "annotator_aware_macro_f1")
    with pytest.raises(FileNotFoundError, match="run the evaluate stage first"):
        read_scores(tmp_path / "absent.json", "sft", "ua")


# ---------------------------------------------------------------- the logged pyfunc
@pytest.fixture(scope="module")
def logged(folders, tmp_path_factory):
    """The merged folder logged in a run of its own experiment (artifacts in tmp)."""
    merged, _ = folders
    experiment = mlflow.create_experiment(
        "test-register-pyfunc", (tmp_path_factory.mktemp("artifacts")).as_uri())
    with mlflow.start_run(experiment_id=experiment):
        return log_pyfunc(merged, "model", max_duration_s=5.0, batch_size=2)


@pytest.mark.slow
def test_logged_model_is_self_contained_pinned_and_typed(logged):
    local = Path(mlflow.artifacts.download_artifacts(logged.model_uri))
    model_dir = next(p for p in local.rglob("task.json")).parent
    assert (model_dir / "language_model").is_dir() and (model_dir / "levels.json").exists()
    assert not (model_dir / "checkpoints").exists() and not (model_dir / "eval.json").exists()
    assert (local / "code" / "components" / "serve" / "pyfunc.py").exists()
    assert not list((local / "code").rglob("__pycache__"))
    requirements = (local / "requirements.txt").read_text().split()
    assert requirements == serving_requirements()
    assert f"mlflow=={version('mlflow')}" in requirements
    assert all("==" in r and "+" not in r for r in requirements)
    assert not any(r.startswith("torchvision") for r in requirements)
    signature = logged.signature
    assert signature.inputs.input_names() == ["audio", "speaker", "transcript"]
    assert [c.required for c in signature.inputs.inputs] == [True, False, False]
    assert signature.outputs.input_names() == list(OUTPUT_COLUMNS)
    assert signature.params.to_dict()[0]["name"] == "rationale"
    example = json.loads((local / "serving_input_example.json").read_text())
    assert example["dataframe_split"]["columns"] == ["audio", "speaker"]
    decoded = base64.b64decode(example["dataframe_split"]["data"][0][0])
    assert decoded == example_wav() and decoded[:4] == b"RIFF"


@pytest.mark.slow
def test_pyfunc_answers_every_row_on_its_own(logged, tmp_path):
    model = mlflow.pyfunc.load_model(logged.model_uri)
    sr = 22050
    t = np.arange(int(0.8 * sr)) / sr
    voiced = (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)))
    stereo = np.stack([voiced, voiced], axis=1).astype(np.float32)
    silent = np.zeros(sr // 2, dtype=np.float32)
    path = tmp_path / "clip.wav"
    sf.write(path, voiced, sr)
    rows = pd.DataFrame({
        "audio": [_b64(stereo, sr, "FLAC"), "not audio at all", _b64(voiced, sr),
                  base64.b64encode(b"\x00" * 300).decode(), _b64(silent, sr),
                  _b64(np.zeros(6 * sr, dtype=np.float32), sr), str(path), None],
        "speaker": ["s1", None, "s1", None, None, None, None, None]})
    out = model.predict(rows)
    assert list(out.columns) == list(OUTPUT_COLUMNS) and len(out) == len(rows)
    good = [0, 2, 4]
    for i in good:
        row = out.iloc[i]
        assert row["error"] is None and row["label"] in LABELS
        probabilities = json.loads(row["probabilities"])
        assert set(probabilities) == set(LABELS)
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert row["label"] == max(probabilities, key=probabilities.get)
        assert isinstance(row["well_formed"], bool) and "pitch_level" in json.loads(row["cues"])
    assert json.loads(out.iloc[4]["flags"]) == ["silent"] and json.loads(out.iloc[0]["flags"]) == []
    errors = {i: out.iloc[i]["error"] for i in range(len(rows)) if i not in good}
    assert "not base64 audio" in errors[1]
    assert "is not audio" in errors[3]
    assert "the limit is 5 s" in errors[5]
    assert "file paths are not read here" in errors[6]  # a server never opens client paths
    assert "no audio given" in errors[7]
    assert all(out.iloc[i]["label"] is None and out.iloc[i]["probabilities"] is None
               for i in errors)

    fast = model.predict(rows.iloc[[2]], params={"rationale": False}).iloc[0]
    assert fast["rationale"] is None and fast["well_formed"] is None
    assert fast["label"] in LABELS and fast["error"] is None

    local = mlflow.pyfunc.load_model(logged.model_uri, model_config={"allow_paths": True})
    assert local.predict(pd.DataFrame({"audio": [str(path)]})).iloc[0]["error"] is None
    with pytest.raises(Exception, match="audio"):
        model.predict(pd.DataFrame({"speaker": ["s1"]}))


@pytest.mark.slow
def test_one_clip_that_breaks_the_batch_fails_alone(logged, monkeypatch):
    model = mlflow.pyfunc.load_model(logged.model_uri)
    predictor = model.unwrap_python_model().predictor
    real = predictor.predict_audio

    def fragile(audio, speakers=None, rationale=True, batch_size=8, transcripts=None):
        if any(len(a) == 16000 for a in audio):
            raise RuntimeError("encoder overflow")
        return real(audio, speakers, rationale, batch_size, transcripts)

    calls = []
    monkeypatch.setattr(predictor, "predict_audio",
                        lambda audio, *a, **k: calls.append(len(audio)) or fragile(audio, *a, **k))
    t = np.arange(16000) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    fine = model.predict(pd.DataFrame({"audio": [_b64(tone[:12000], 16000), "bad",
                                                 _b64(tone[:8000], 16000)]}),
                         params={"rationale": False})
    assert calls == [2] and fine["error"].isna().tolist() == [True, False, True]  # one batch
    calls.clear()
    out = model.predict(pd.DataFrame({"audio": [_b64(tone[:12000], 16000), _b64(tone, 16000),
                                                _b64(tone[:8000], 16000)]}),
                        params={"rationale": False})
    assert out["error"].tolist()[0] is None and out["error"].tolist()[2] is None
    assert out.iloc[1]["error"] == "prediction failed: RuntimeError: encoder overflow"
    assert out.iloc[0]["label"] in LABELS and out.iloc[2]["label"] in LABELS
    assert calls == [3, 1, 1, 1]  # the batch failed, then each clip alone


def _closure(names: list[str]) -> set[str]:
    """The distributions these install, with their dependencies (markers of this machine)."""
    seen: set[str] = set()
    todo = [canonicalize_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return seen


def _imported_names(files: list[str]) -> set[str]:
    """Top-level names of the absolute imports written in these source files."""
    names = set()
    for file in files:
        for node in ast.walk(ast.parse(Path(file).read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


@pytest.mark.slow
def test_serving_requirements_cover_what_prediction_imports(folders):
    """Load the pyfunc and predict in a fresh interpreter: every third-party package that the
    project's code imports there must be installed by the pinned requirements (packages that
    libraries import only because they happen to be installed do not count)."""
    merged, _ = folders
    code = (
        "import sys, json, base64, inspect, importlib.metadata as md, pandas as pd\n"
        "from mlflow.pyfunc import PythonModelContext\n"
        "from components.serve.pyfunc import EmoReasonModel, example_wav\n"
        "m = EmoReasonModel()\n"
        f"m.load_context(PythonModelContext({{'model': {str(merged)!r}}}, {{}}))\n"
        "out = m.predict(None, pd.DataFrame({'audio': "
        "[base64.b64encode(example_wav()).decode()]}))\n"
        "assert out['error'].isna().all(), out['error'][0]\n"
        "names = {}\n"  # top-level module -> distributions, compiled modules included
        # the first path part of each RECORD line, read as text: `Distribution.files` builds
        # an object per file and takes minutes over this environment's distributions
        "for d in md.distributions():\n"
        "    record = d.read_text('RECORD') or ''\n"
        "    for first in {line.split(',', 1)[0].split('/', 1)[0]\n"
        "                  for line in record.splitlines()}:\n"
        "        top = inspect.getmodulename(first) or first\n"
        "        names.setdefault(top, set()).add(d.metadata['Name'])\n"
        "tops = {n.split('.')[0] for n in list(sys.modules)}\n"
        "print(json.dumps({'dists': {t: sorted(names[t]) for t in tops if t in names},\n"
        "                  'files': [m.__file__ for n, m in list(sys.modules.items())\n"
        "                            if n.startswith('components') and m.__file__]}))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    ours = _imported_names(loaded["files"]) - set(sys.stdlib_module_names) - {"components"}
    needed = {canonicalize_name(d) for top in ours & set(loaded["dists"])
              for d in loaded["dists"][top]}
    assert {"torch", "transformers", "opensmile", "praat-parselmouth", "mlflow"} <= needed
    installed = _closure([r.split("==")[0] for r in serving_requirements()])
    assert needed - installed == set()


# ---------------------------------------------------------------- the register stage
@pytest.fixture
def register_params(tmp_path, request):
    params = Params()
    params.register.model_name = f"emoreason-{request.node.name[:40]}".replace("[", "-")
    params.register.out = str(tmp_path / "register")
    return params


def _light_log(model_folder, artifact_name, registered_model_name=None, **_):
    """Logs and registers a trivial model: the gate tests are about aliases and tags, the
    real pyfunc is logged by test_first_registration_is_champion_and_challenger."""
    @mlflow.pyfunc.utils.pyfunc
    def echo(model_input: list[str]) -> list[str]:
        return model_input

    return mlflow.pyfunc.log_model(name=artifact_name, python_model=echo,
                                   input_example=["x"], registered_model_name=registered_model_name)


def _version(name: str, version: str):
    return mlflow.MlflowClient().get_model_version(name, version)


@pytest.mark.slow
def test_first_registration_is_champion_and_challenger(folders, register_params, tmp_path):
    _, adapter = folders
    result = run_register(register_params, adapter, _metrics(tmp_path / "m.json", 0.5))
    name = register_params.register.model_name
    assert result["version"] == "1" and result["aliases"] == ["challenger", "champion"]
    assert result["decision"] == "promoted" and "no champion yet" in result["reason"]
    assert result["champion_before"] is None and result["gate_value"] == 0.5
    saved = json.loads((Path(register_params.register.out) / "result.json").read_text())
    assert saved == result
    tags = _version(name, "1").tags
    assert tags["emoreason.gate_value"] == "0.5" and tags["emoreason.decision"] == "promoted"
    assert tags["emoreason.metric.ua"] == "0.4" and tags["emoreason.grounding"] == "0.8"
    run = mlflow.get_run(result["run_id"])
    assert run.data.tags["emoreason.stage"] == "register"
    assert run.data.tags["emoreason.decision"] == "promoted"
    assert run.data.metrics["gate_value"] == 0.5
    # the adapter folder was exported: the registry holds the LM with LoRA merged in
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}@champion"))
    model_dir = next(p for p in local.rglob("task.json")).parent
    assert (model_dir / "language_model").is_dir()
    assert not (model_dir / "adapter_model.safetensors").exists()
    # the served model decodes as `inference` says
    config = mlflow.models.get_model_info(f"models:/{name}@champion").flavors[
        "python_function"]["config"]
    assert config["repeat_block"] == register_params.inference.repeat_block == [3, 2]
    assert config["claim_guard"] is register_params.inference.claim_guard is True


def test_worse_version_is_challenger_only_and_tags_say_why(register_params, tmp_path,
                                                           monkeypatch):
    monkeypatch.setattr("components.serve.pyfunc.log_pyfunc", _light_log)
    name = register_params.register.model_name
    run_register(register_params, "unused", _metrics(tmp_path / "a.json", 0.5))
    result = run_register(register_params, "unused", _metrics(tmp_path / "b.json", 0.45))
    assert result["version"] == "2" and result["aliases"] == ["challenger"]
    assert result["decision"] == "kept"
    assert result["champion_before"] == {"version": "1", "gate_value": 0.5, "grounding": 0.8}
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(name, "challenger").version) == "2"
    tags = _version(name, "2").tags
    assert tags["emoreason.decision"] == "kept"
    assert "annotator_aware_macro_f1 0.4500 does not beat champion v1's 0.5000" \
        in tags["emoreason.reason"]
    assert tags["emoreason.new_gate_value"] == "0.45"
    assert tags["emoreason.champion_gate_value"] == "0.5"
    run = mlflow.get_run(result["run_id"]).data.tags
    assert run["emoreason.champion_gate_value"] == "0.5" and run["emoreason.decision"] == "kept"


def test_better_version_takes_champion(register_params, tmp_path, monkeypatch):
    monkeypatch.setattr("components.serve.pyfunc.log_pyfunc", _light_log)
    name = register_params.register.model_name
    run_register(register_params, "unused", _metrics(tmp_path / "a.json", 0.5))
    run_register(register_params, "unused", _metrics(tmp_path / "b.json", 0.45))
    result = run_register(register_params, "unused", _metrics(tmp_path / "c.json", 0.55, 0.78))
    assert result["version"] == "3" and result["aliases"] == ["challenger", "champion"]
    assert result["champion_before"]["version"] == "1"  # v2 never was champion
    aliases = mlflow.MlflowClient().get_registered_model(name).aliases
    assert {k: str(v) for k, v in aliases.items()} == {"champion": "3", "challenger": "3"}
    assert _version(name, "1").aliases == []


def test_grounding_drop_beyond_tolerance_keeps_the_champion(register_params, tmp_path,
                                                            monkeypatch):
    monkeypatch.setattr("components.serve.pyfunc.log_pyfunc", _light_log)
    name = register_params.register.model_name
    run_register(register_params, "unused", _metrics(tmp_path / "a.json", 0.5, 0.8))
    result = run_register(register_params, "unused", _metrics(tmp_path / "b.json", 0.7, 0.7))
    assert result["decision"] == "kept" and result["aliases"] == ["challenger"]
    assert "rationale grounding dropped by 0.1000 (0.8000 -> 0.7000), more than the " \
           "tolerance 0.05" in _version(name, "2").tags["emoreason.reason"]
    register_params.register.grounding_tolerance = 0.15  # a looser gate lets it through
    result = run_register(register_params, "unused", _metrics(tmp_path / "c.json", 0.7, 0.7))
    assert result["decision"] == "promoted" and result["version"] == "3"
    other = run_register(register_params, "unused",
                         _metrics(tmp_path / "d.json", 0.9, 0.9, corpus="ravdess"))
    assert other["decision"] == "kept" and "not comparable" in other["reason"]
