"""The behavioural suite: its audio changes do what they say, its pass rates count what they
say (a scripted predictor), and it runs end to end on a tiny model folder."""
import numpy as np
import parselmouth
import pytest
import soundfile as sf

from components.audio_io import read_audio
from components.config import DemoConfig
from components.evaluate.behaviour import Clip, aroused, run_suite, variant
from components.prepare.demo import generate_demo_corpus

LABELS = ["neutral", "happy", "sad", "angry"]


@pytest.fixture(scope="module")
def demo_clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("behaviour")
    generate_demo_corpus(root, DemoConfig(n_clips=12, n_speakers=2), seed=3, progress=False)
    return sorted(root.rglob("*.wav"))[:4]


def f0_median(audio: np.ndarray) -> float:
    pitch = parselmouth.Sound(audio.astype(np.float64), 16000).to_pitch(pitch_floor=75,
                                                                       pitch_ceiling=600)
    f0 = pitch.selected_array["frequency"]
    return float(np.median(f0[f0 > 0]))


def test_variants_and_the_arousal_change(demo_clips):
    audio = read_audio(demo_clips[0], 16000)[0]
    up, rate = variant(audio, "48khz")
    assert rate == 48000 and abs(len(up) - 3 * len(audio)) <= 3
    stereo, _ = variant(audio, "stereo")
    assert stereo.shape == (len(audio), 2) and np.array_equal(stereo[:, 0], stereo[:, 1])
    padded, _ = variant(audio, "silence")
    assert len(padded) == len(audio) + 8000 and not padded[len(audio):].any()
    audio = audio / np.abs(audio).max() * 0.25  # room for the gain: it is cut where it would clip
    louder = aroused(audio, semitones=4.0, gain_db=6.0)
    assert 12 * np.log2(f0_median(louder) / f0_median(audio)) == pytest.approx(4.0, abs=1.0)
    rms = lambda a: np.sqrt(np.mean(a.astype(np.float64) ** 2))  # noqa: E731
    assert 20 * np.log10(rms(louder) / rms(audio)) > 3.0
    assert np.abs(louder).max() <= 0.99 + 1e-6
    with pytest.raises(ValueError, match="unknown variant"):
        variant(audio, "8khz")


def scripted(paths, transcripts):
    """A predictor whose angry probability is the clip's peak level (louder: angrier) and whose
    rationale always says 'loud and high-pitched', with levels measured from the peak."""
    out = []
    for path in paths:
        audio, _ = read_audio(path, 16000)
        peak = float(np.clip(np.abs(audio).max(), 0.0, 1.0))
        probs = {"neutral": (1 - peak) / 2, "happy": 0.0, "sad": (1 - peak) / 2, "angry": peak}
        loud = "high" if peak > 0.35 else "low"
        out.append({"label": max(probs, key=probs.get), "probabilities": probs,
                    "rationale": "The voice is loud and the pitch is high.",
                    "cues": {"energy_level": loud, "pitch_level": loud}, "error": None})
    return out


def test_pass_rates_count_what_the_predictor_did(demo_clips, tmp_path):
    quiet = []
    for i, path in enumerate(demo_clips[:3]):
        audio = read_audio(path, 16000)[0]
        quiet.append(tmp_path / f"quiet{i}.wav")
        sf.write(quiet[-1], audio / np.abs(audio).max() * 0.2, 16000)
    loud = tmp_path / "loud.wav"
    audio = read_audio(demo_clips[3], 16000)[0]
    sf.write(loud, audio / np.abs(audio).max() * 0.9, 16000)
    clips = [Clip(p, "neutral") for p in quiet] + [Clip(loud, "angry")]
    result = run_suite(scripted, LABELS, invariance=clips, directional=[Clip(quiet[0], "neutral")],
                       functionality=clips[:2] + [Clip(quiet[2], "angry"), Clip(loud, "angry")])
    for name in ("48khz", "stereo", "silence"):
        assert result[f"invariance_{name}"]["n"] == 4
        assert result[f"invariance_{name}"]["pass_rate"] == 1.0, result[f"invariance_{name}"]
    assert result["directional_arousal"]["pass_rate"] == 1.0  # peak 0.2 -> 0.99 after the change
    assert result["directional_cues"] == {"n": 1, "passed": 1, "pass_rate": 1.0, "failures": []}
    mft = result["minimum_functionality"]
    assert mft["pass_rate"] == 0.75 and mft["per_class"] == {"neutral": 1.0, "angry": 0.5}
    assert mft["failures"][0]["predicted"] == "neutral"


@pytest.mark.slow
def test_the_suite_runs_on_a_tiny_model_folder(demo_clips, tmp_path):
    from components.serve.predictor import load_predictor
    from components.serve.rows import predict_rows
    from tests.tiny_models import save_tiny_model_folder

    predictor = load_predictor(save_tiny_model_folder(tmp_path / "model", LABELS),
                               max_new_tokens=8)

    def predict(paths, transcripts):
        return predict_rows(predictor, paths, transcripts=transcripts)

    clips = [Clip(p, "neutral", "kids are talking by the door") for p in demo_clips[:2]]
    result = run_suite(predict, LABELS, clips, clips, clips)
    assert {k: v["n"] for k, v in result.items() if k != "directional_cues"} == {
        "invariance_48khz": 2, "invariance_stereo": 2, "invariance_silence": 2,
        "directional_arousal": 2, "minimum_functionality": 2}
    assert result["minimum_functionality"]["pass_rate"] in (0.0, 0.5, 1.0)
