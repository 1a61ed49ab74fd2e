"""The registered champion served over REST by `mlflow models serve`: a real WAV is answered,
a garbage row gets its own error in the same response, and label-only requests work."""
import base64
import io
import json
import os
import urllib.request

import numpy as np
import pytest
import soundfile as sf

from components.config import Params
from components.register.stage import run_register
from components.serve.rest import start_model_server, stop_model_server
from tests.tiny_models import save_tiny_model_folder

pytestmark = pytest.mark.slow
LABELS = ["neutral", "happy", "sad", "angry"]


def _voiced_glide_b64(sr: int = 22050, seconds: float = 1.2) -> str:
    """A rising-then-falling voiced tone with harmonics and syllable-rate loudness, as a
    base64 stereo WAV at 22.05 kHz (the server resamples and downmixes)."""
    t = np.arange(int(sr * seconds)) / sr
    f0 = 140 + 60 * np.sin(np.pi * t / seconds)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voice = sum(np.sin(k * phase) / k for k in (1, 2, 3))
    audio = (0.25 * voice * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, np.stack([audio, audio], axis=1), sr, format="WAV", subtype="PCM_16")
    return base64.b64encode(buf.getvalue()).decode()


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())


def test_champion_served_over_rest(tmp_path):
    folder = save_tiny_model_folder(tmp_path / "model", LABELS)
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"corpus": "demo", "split": "test", "labels": LABELS,
                                   "systems": {"sft": {"annotator_aware_macro_f1": 0.5,
                                                       "grounding": 0.8}}}))
    params = Params()
    params.register.model_name = "emoreason-rest"
    params.register.out = str(tmp_path / "register")
    result = run_register(params, folder, metrics)
    assert "champion" in result["aliases"]

    server, port = start_model_server(f"models:/{params.register.model_name}@champion",
                                      dict(os.environ), tmp_path / "server.log", cwd=tmp_path)
    try:
        url = f"http://127.0.0.1:{port}/invocations"
        garbage = base64.b64encode(b"definitely not a sound file " * 8).decode()
        answer = _post(url, {"dataframe_split": {"columns": ["audio", "speaker"],
                                                 "data": [[_voiced_glide_b64(), "spk1"],
                                                          [garbage, None]]}})
        good, bad = answer["predictions"]
        assert good["error"] is None and good["label"] in LABELS
        probabilities = json.loads(good["probabilities"])
        assert set(probabilities) == set(LABELS)
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert isinstance(good["well_formed"], bool)
        assert json.loads(good["cues"])["pitch_level"] in ("low", "normal", "high")
        assert bad["error"] and "is not audio" in bad["error"]
        assert bad["label"] is None and bad["probabilities"] is None

        fast = _post(url, {"dataframe_records": [{"audio": _voiced_glide_b64(),
                                                  "transcript": "dogs are sitting by the door"}],
                           "params": {"rationale": False}})["predictions"][0]
        assert fast["label"] in LABELS and fast["rationale"] is None and fast["error"] is None
        assert fast["transcript"] == "dogs are sitting by the door"  # no recognition needed
    finally:
        stop_model_server(server)
