"""The served model: an MLflow pyfunc over a self-contained model folder.

Input: a DataFrame with `audio` (base64 text of audio in any format soundfile reads), an
optional `speaker` (clips of one named speaker in a request are normalised over each other,
as in training) and an optional `transcript` (a client with its own speech recognition skips
the model's: most of the time of a short clip). Output: one row per input, in order: transcript, label,
probabilities and cues as JSON text, rationale, well_formed, flags (JSON list, e.g.
`["silent"]`) and error. Probabilities and cues are JSON text rather than nested objects: a
string column has one schema whatever the label set or the cues measured, and survives every
MLflow path (REST, `pyfunc.load_model`, Spark UDFs) unchanged; a client reads it with one
`json.loads`.

A row that cannot be used gets its own `error` and the others are still answered; the usable
rows go through the predictor together, in batches. The server never opens a path named in a
request (a client could otherwise probe the server's files): `allow_paths` in the model
config turns path inputs on for in-process use (`mlflow.pyfunc.load_model(uri,
model_config={"allow_paths": True})`).
"""
from __future__ import annotations

import base64
import io
import json
import math
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from components.serve.torch_thread import on_torch_thread

OUTPUT_COLUMNS = ("transcript", "label", "probabilities", "rationale", "cues", "well_formed",
                  "flags", "error")
SERVING_REQUIREMENTS = (
    "mlflow", "torch", "transformers", "tokenizers", "safetensors", "peft", "numpy", "pandas",
    "scipy", "soundfile", "opensmile", "praat-parselmouth", "pocketsphinx", "moonshine-cpp",
    "onnxruntime", "onnx", "pyyaml", "tqdm", "jiwer",
)
"""Distributions serving imports, pinned to the installed versions when a model is logged."""
TRAINING_RECORDS = ("checkpoints", "eval.json")
"""Files of a model folder that record training and stay out of the registry."""


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _finite_json(value):
    """JSON-ready: NaN and infinities become null (they are not JSON)."""
    if isinstance(value, dict):
        return {str(k): _finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_json(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _as_json(value) -> str | None:
    return None if value is None else json.dumps(_finite_json(value), ensure_ascii=False)


def answer_rows(predictor, values: list, speakers: list[str | None], rationale: bool,
                max_duration_s: float, batch_size: int, allow_paths: bool,
                transcripts: list[str | None] | None = None) -> list[dict]:
    """One result per input (`components.serve.rows.predict_rows`); without `allow_paths`
    every value must be base64 or bytes, never a path on the server."""
    from components.serve.inputs import AudioInputError, audio_bytes
    from components.serve.rows import EMPTY, predict_rows

    results: list[dict] = [{} for _ in values]
    usable = []
    for i, value in enumerate(values):
        try:
            usable.append((i, value if allow_paths else audio_bytes(value)))
        except AudioInputError as exc:
            results[i] = {**EMPTY, "flags": [], "error": str(exc)}
    transcripts = transcripts or [None] * len(values)
    answers = predict_rows(predictor, [v for _, v in usable], [speakers[i] for i, _ in usable],
                           rationale=rationale, max_duration_s=max_duration_s,
                           batch_size=batch_size,
                           transcripts=[transcripts[i] for i, _ in usable]) if usable else []
    for (i, _), answer in zip(usable, answers, strict=True):
        results[i] = answer
    return results


class EmoReasonModel(mlflow.pyfunc.PythonModel):
    """Audio in, transcript, label, probabilities, rationale and measured cues out.

    Model config (set when logged, overridable at load time): `max_duration_s` (longer clips
    get an error), `batch_size`, `allow_paths` (default false), `max_new_tokens`, `dtype`
    (the weights' number format, `components.serve.predictor.cast_for_serving`) and `device`
    (a `base.device` name; default cpu, as models logged before it was a setting ran),
    `self_correct_rounds` and `self_correct_instruction` (refinement after the first answer,
    `inference.*`; default 0: off), `repeat_block` ([n, k] of `inference.repeat_block`;
    default none: plain greedy decoding) and `claim_guard` (`inference.claim_guard`; default
    false)."""

    def load_context(self, context) -> None:
        from components.serve.predictor import load_predictor

        config = dict(context.model_config or {})
        self.max_duration_s = float(config.get("max_duration_s", 60.0))
        self.batch_size = int(config.get("batch_size", 8))
        self.allow_paths = bool(config.get("allow_paths", False))
        self.predictor = on_torch_thread(  # see components.serve.torch_thread
            load_predictor, Path(context.artifacts["model"]),
            max_new_tokens=int(config.get("max_new_tokens", 96)),
            dtype=str(config.get("dtype", "float32")), device=str(config.get("device", "cpu")),
            self_correct=(str(config.get("self_correct_instruction", "")),
                          int(config.get("self_correct_rounds", 0))),
            repeat_block=config.get("repeat_block"),
            claim_guard=bool(config.get("claim_guard", False)))

    def predict(self, context, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        """`params`: `rationale` (default true); false answers label and probabilities
        only, from one forward pass without generation."""
        if not isinstance(model_input, pd.DataFrame) or "audio" not in model_input.columns:
            raise ValueError("the input needs an `audio` column (base64 audio per row)")
        rationale = bool((params or {}).get("rationale", True))
        values = [None if _missing(v) else v for v in model_input["audio"].tolist()]
        speakers, transcripts = (
            [None if _missing(v) or str(v).strip() == "" else str(v)
             for v in (model_input[column].tolist() if column in model_input
                       else [None] * len(values))]
            for column in ("speaker", "transcript"))
        rows = on_torch_thread(answer_rows, self.predictor, values, speakers, rationale,
                               self.max_duration_s, self.batch_size, self.allow_paths,
                               transcripts)
        return pd.DataFrame([{  # object columns: a missing value stays None (JSON null)
            "transcript": row["transcript"], "label": row["label"],
            "probabilities": _as_json(row["probabilities"]), "rationale": row["rationale"],
            "cues": _as_json(row["cues"]),
            "well_formed": None if row["well_formed"] is None else bool(row["well_formed"]),
            "flags": _as_json(list(row.get("flags") or [])), "error": row["error"],
        } for row in rows], columns=list(OUTPUT_COLUMNS), dtype=object)


def example_wav(seconds: float = 1.0, sr: int = 16000) -> bytes:
    """A voiced glide (150 -> 210 Hz with harmonics and a 4 Hz syllable envelope) as 16-bit
    WAV bytes: short enough for a request example, voiced enough for every measurement."""
    import soundfile as sf

    t = np.arange(int(sr * seconds)) / sr
    phase = 2 * np.pi * np.cumsum(150.0 + 60.0 * t / seconds) / sr
    voice = sum(np.sin(k * phase) / k for k in (1, 2, 3, 4))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t - np.pi / 2)
    ramp = np.minimum(1.0, np.minimum(t, seconds - t) / 0.02)
    buf = io.BytesIO()
    sf.write(buf, (0.25 * voice * envelope * ramp).astype(np.float32), sr, format="WAV",
             subtype="PCM_16")
    return buf.getvalue()


def input_example() -> pd.DataFrame:
    return pd.DataFrame({"audio": [base64.b64encode(example_wav()).decode("ascii")],
                         "speaker": [None]})


def serving_requirements() -> list[str]:
    """`SERVING_REQUIREMENTS` pinned to this environment's versions, without local labels
    (`torch==2.13.0`, not `2.13.0+cpu`, which only a vendor's index has)."""
    pins = []
    for name in SERVING_REQUIREMENTS:
        try:
            pins.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            raise RuntimeError(f"{name} is not installed; serving needs it") from None
    return pins


def _stage_code(tmp: Path) -> str:
    """A clean copy of the `components` package (no bytecode caches) for `code_paths`."""
    import components

    source = Path(components.__file__).resolve().parent
    target = tmp / "code" / source.name
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return str(target)


def _stage_model(folder: Path, tmp: Path) -> Path:
    """A self-contained serving folder: LoRA merged (exported when `folder` holds an adapter,
    which would need the base LM on the serving machine), without the training records."""
    from components.serve.export import export_for_serving
    from components.speechlm.config import SpeechLMConfig

    if not SpeechLMConfig.from_pretrained(folder).merged:
        return export_for_serving(folder, tmp / "model")
    return Path(shutil.copytree(folder, tmp / "model",
                                ignore=shutil.ignore_patterns(*TRAINING_RECORDS, "__pycache__")))


MODEL_CODE = """\
# The served model, logged as code (no pickle): MLflow runs this file to build it.
import mlflow

from components.serve.pyfunc import EmoReasonModel

mlflow.models.set_model(EmoReasonModel())
"""


def signature():
    """Input: `audio` (base64 text), optional `speaker` and `transcript`; output: every column optional text
    but `well_formed` (an answer's fields are null on an error row). Written out, not
    inferred from one answer, whose nulls would depend on what that answer held."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import ColSpec, Schema

    params = infer_signature(input_example()[["audio"]], params={"rationale": True}).params
    outputs = [ColSpec("boolean" if name == "well_formed" else "string", name, required=False)
               for name in OUTPUT_COLUMNS]
    return ModelSignature(inputs=Schema([ColSpec("string", "audio"),
                                         ColSpec("string", "speaker", required=False),
                                         ColSpec("string", "transcript", required=False)]),
                          outputs=Schema(outputs), params=params)


def log_pyfunc(model_folder: Path | str, artifact_name: str = "model",
               registered_model_name: str | None = None, max_duration_s: float = 60.0,
               batch_size: int = 8, dtype: str = "float32", device: str = "cpu",
               self_correct: tuple[str, int] = ("", 0),
               repeat_block: list[int] | None = None, claim_guard: bool = False):
    """Log the model folder as a pyfunc in the active MLflow run (registering it under
    `registered_model_name` when given); returns the ModelInfo. `dtype`, `device`,
    `self_correct` (instruction, rounds), `repeat_block` and `claim_guard` go into the model
    config (see `EmoReasonModel`).

    The logged model is checked first: it answers the input example in-process (and MLflow
    answers it again from the saved copy), and a model that cannot answer its own example
    is not logged.
    """
    model_folder = Path(model_folder)
    if not (model_folder / "task.json").exists():
        raise FileNotFoundError(f"{model_folder} is not a trained model folder (no task.json)")
    config = {"max_duration_s": float(max_duration_s), "batch_size": int(batch_size),
              "allow_paths": False, "dtype": dtype, "device": device,
              "self_correct_instruction": self_correct[0],
              "self_correct_rounds": int(self_correct[1]),
              "repeat_block": list(repeat_block) if repeat_block else None,
              "claim_guard": bool(claim_guard)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        staged = on_torch_thread(_stage_model, model_folder, tmp_path)  # the merge is torch work
        model = EmoReasonModel()
        example = input_example()
        model.load_context(mlflow.pyfunc.PythonModelContext({"model": str(staged)}, config))
        output = model.predict(None, example)
        if list(output.columns) != list(OUTPUT_COLUMNS) or output["error"].notna().any():
            raise RuntimeError(f"{model_folder} cannot answer the input example: "
                               f"{output['error'].iloc[0]}")
        del model  # its weights are freed before MLflow loads the saved copy to check it
        code = tmp_path / "serve_model.py"
        code.write_text(MODEL_CODE)
        return mlflow.pyfunc.log_model(
            name=artifact_name, python_model=str(code), artifacts={"model": str(staged)},
            code_paths=[_stage_code(tmp_path)], pip_requirements=serving_requirements(),
            signature=signature(), input_example=example, model_config=config,
            registered_model_name=registered_model_name,
        )
