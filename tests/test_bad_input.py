"""Bad input, stage by stage and at prediction time: every unusable file gets a clear error or
a quarantine row naming it and the reason, never a traceback, and no good clip is lost.

One matrix of generated files (soundfile) goes through `prepare` + the manifest gate +
`features` on a tiny RAVDESS-shaped corpus, through `emoreason predict` and through the served
pyfunc; corpus- and params-level mistakes go through the CLI.
"""
import base64
import json
import re

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from components.cli import main
from tests.corpus_fixtures import (
    ravdess_name,
    write_cremad_fixture,
    write_ravdess_fixture,
    write_tone,
)

LABELS = ["neutral", "happy", "sad", "angry"]
F0 = 180.0
"""Pitch of the usable special clips, so their measurements can be compared."""

# stage side: case -> words of its quarantine reason (None: kept, measured by `features`)
STAGE = {
    "corrupt": "unreadable", "empty": "unreadable", "zero_samples": "no samples",
    "silent": "silent", "ten_minutes": "too long", "missing": "missing",
    "clipped": None, "rate_8k": None, "rate_48k": None, "stereo": None, "out_of_phase": None,
}
# predict side: case -> words of its error, or the flags of its answer
PREDICT_ERRORS = {
    "corrupt": "not audio soundfile can read", "empty": "empty file",
    "zero_samples": "zero samples", "ten_minutes": "the limit is 60 s", "missing": "no such file",
}
SERVED_ERRORS = {**PREDICT_ERRORS, "empty": "no audio given", "missing": "no audio given"}
"""The server reads base64, never paths: an empty file is empty text, a missing one no value."""
PREDICT_FLAGS = {"silent": ["silent"], "clipped": ["clipped"], "rate_8k": [], "rate_48k": [],
                 "stereo": [], "out_of_phase": ["stereo_cancelled"]}


def write_case(case: str, path) -> None:
    """The file of one matrix case at `path` ('missing' writes nothing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if case == "missing":
        return
    if case == "empty":
        path.write_bytes(b"")
        return
    if case == "zero_samples":  # a valid header, no samples
        sf.write(path, np.zeros(0, np.float32), 16000)
        return
    rate = {"rate_8k": 8000, "rate_48k": 48000, "ten_minutes": 8000}.get(case, 16000)
    write_tone(path, 600.0 if case == "ten_minutes" else 0.6, rate, f0=F0)
    if case == "corrupt":
        data = bytearray(path.read_bytes())
        data[8:40] = b"\x00" * 32  # RIFF kept, format chunk destroyed
        path.write_bytes(bytes(data))
        return
    if case in ("rate_8k", "rate_48k", "ten_minutes"):
        return
    voice, sr = sf.read(path, dtype="float32")
    if case == "silent":
        sf.write(path, np.zeros_like(voice), sr)
    elif case == "clipped":
        sf.write(path, np.clip(5.0 * voice, -1.0, 1.0), sr, subtype="FLOAT")
    elif case == "stereo":
        sf.write(path, np.stack([voice, 0.5 * voice], axis=1), sr)
    elif case == "out_of_phase":  # one channel wired inverted: the plain mean is silence
        sf.write(path, np.stack([voice, -voice], axis=1), sr)


def _params(tmp_path, **sections) -> str:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(sections))
    return str(path)


@pytest.mark.parametrize("right,cancelled", [
    (-1.0, True),   # wired inverted: the mean is digital silence
    (-0.85, True),  # nearly inverted: the mean is 22.5 dB below the left channel
    (-0.5, False),  # the mean loses 12 dB: quieter, but the voice is there
    (0.0, False),   # one dead channel: the mean is the other at half level
    (1.0, False),
])
def test_mono_is_the_channel_mean_unless_the_channels_cancel(right, cancelled):
    from components.audio_io import downmix

    t = np.arange(8000) / 16000
    left = (0.3 * np.sin(2 * np.pi * F0 * t)).astype(np.float32)
    mono, flag = downmix(np.stack([left, right * left], axis=1))
    assert flag == cancelled
    np.testing.assert_allclose(mono, left if cancelled else (1 + right) / 2 * left, atol=1e-6)


# ---------------------------------------------------------------------------------- stages

@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """A RAVDESS folder of 8 good clips plus one file per matrix case (actor 05), prepared,
    gated (the 'missing' file deleted after prepare: the audio moved) and measured."""
    from components.config import FeaturesConfig, Params
    from components.features.stage import run_features

    tmp = tmp_path_factory.mktemp("bad-stage")
    corpus = write_ravdess_fixture(tmp / "ravdess", emotions=("01", "03"))
    names = {}
    for i, case in enumerate(STAGE):
        names[case] = ravdess_name("01", 5, repetition=i + 1)[:-4]
        write_case(case if case != "missing" else "stereo", corpus / "Actor_05" /
                   f"{names[case]}.wav")
    params = _params(tmp, manifest_gate={"out": str(tmp / "gated"),
                                         "report_dir": str(tmp / "gate-report"),
                                         "max_quarantine_share": 0.5})
    assert main(["--params", params, "prepare", "--corpus", "ravdess", "--data-dir",
                 str(corpus), "--out", str(tmp / "prepared")]) == 0
    (corpus / "Actor_05" / f"{names['missing']}.wav").unlink()
    gate = main(["--params", params, "gate", "manifest",
                 "--manifest", str(tmp / "prepared" / "manifest.parquet")])
    feats = None
    if gate == 0:
        cfg = Params()
        cfg.features = FeaturesConfig(workers=1, frames=False, cache_dir=str(tmp / "cache"))
        run_features(cfg, tmp / "gated" / "manifest.parquet", tmp / "features", None)
        feats = pd.read_parquet(tmp / "features" / "features.parquet").set_index("utt_id")
    return tmp, names, gate, feats


@pytest.mark.slow
def test_prepare_lists_every_file_and_the_gate_quarantines_each_bad_one_by_name(staged):
    tmp, names, gate, _ = staged
    manifest = pd.read_parquet(tmp / "prepared" / "manifest.parquet")
    assert set(names.values()) <= set(manifest["utt_id"])
    assert gate == 0, (tmp / "gate-report" / "result.json").read_text()
    quarantine = pd.read_csv(tmp / "gated" / "quarantine.csv", keep_default_na=False)
    reasons = dict(zip(quarantine["utt_id"], quarantine["reason"]))
    paths = dict(zip(quarantine["utt_id"], quarantine["audio_path"]))
    bad = {case: word for case, word in STAGE.items() if word}
    assert set(reasons) == {names[case] for case in bad}
    for case, word in bad.items():
        assert word in reasons[names[case]], (case, reasons[names[case]])
        assert paths[names[case]] == f"Actor_05/{names[case]}.wav"
    gated = pd.read_parquet(tmp / "gated" / "manifest.parquet")
    assert set(gated["utt_id"]) == set(manifest["utt_id"]) - set(reasons)


@pytest.mark.slow
def test_features_measure_every_kept_clip_whatever_its_rate_and_channels(staged):
    _, names, _, feats = staged
    assert feats is not None
    kept = {case: feats.loc[names[case]] for case, word in STAGE.items() if word is None}
    for case, row in kept.items():
        assert np.isfinite(row["f0_median_hz"]) and np.isfinite(row["energy_dbfs"]), case
        assert abs(row["f0_median_hz"] - F0) < 0.15 * F0, (case, row["f0_median_hz"])
    assert "clipped" in kept["clipped"]["flags"]
    # out-of-phase channels are heard as one channel, not as the silence of their mean
    assert kept["out_of_phase"]["energy_dbfs"] == pytest.approx(
        feats.loc[names["stereo"]]["energy_dbfs"] + 20 * np.log10(1 / 0.75), abs=0.5)


# ---------------------------------------------------------------------------------- predict

@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    """Every case but the stage-only ones as a file (or a missing path), and a tiny model."""
    from tests.tiny_models import save_tiny_model_folder

    tmp = tmp_path_factory.mktemp("bad-predict")
    paths = {}
    for case in [*PREDICT_ERRORS, *PREDICT_FLAGS]:
        paths[case] = tmp / "clips" / f"{case}.wav"
        write_case(case, paths[case])
    return paths, save_tiny_model_folder(tmp / "model", LABELS)


@pytest.mark.slow
def test_predict_answers_the_good_clips_and_names_each_bad_file(matrix, tmp_path, capsys):
    paths, model = matrix
    cases = list(paths)
    params = _params(tmp_path)
    status = main(["--params", params, "predict", "--model", str(model),
                   *map(str, paths.values()), "--json", "--no-rationale"])
    out, err = capsys.readouterr()
    assert status == 2 and "Traceback" not in out + err
    results = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["path"] for r in results] == [str(paths[c]) for c in cases]
    for case, result in zip(cases, results):
        if case in PREDICT_ERRORS:
            assert result["label"] is None and PREDICT_ERRORS[case] in result["error"], \
                (case, result["error"])
        else:
            assert result["error"] is None and result["label"] in LABELS, (case, result)
            assert result["flags"] == PREDICT_FLAGS[case], case

    assert main(["--params", params, "predict", "--model", str(model),
                 str(paths["corrupt"]), str(paths["clipped"]), "--no-rationale"]) == 2
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith(f"{paths['corrupt']}: error: ") and "not audio" in lines[0]
    assert lines[1].startswith(f"{paths['clipped']}: ") and lines[1].endswith("[clipped]")
    assert "Traceback" not in out + err


@pytest.mark.slow
def test_served_pyfunc_answers_each_row_on_its_own(matrix):
    import mlflow

    from components.serve.pyfunc import EmoReasonModel

    paths, model = matrix
    served = EmoReasonModel()
    served.load_context(mlflow.pyfunc.PythonModelContext({"model": str(model)}, {}))
    cases = list(paths)
    audio = [base64.b64encode(paths[c].read_bytes()).decode() if paths[c].exists() else None
             for c in cases]
    answer = served.predict(None, pd.DataFrame({"audio": audio}), {"rationale": False})
    assert len(answer) == len(cases)
    for case, row in zip(cases, answer.to_dict("records")):
        if case in PREDICT_ERRORS:
            assert row["label"] is None and SERVED_ERRORS[case] in row["error"], \
                (case, row["error"])
        else:
            assert row["error"] is None and row["label"] in LABELS, (case, row["error"])
            assert json.loads(row["flags"]) == PREDICT_FLAGS[case], case


# ------------------------------------------------------------------------ corpus and params

LOG_LINE = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d INFO ")
"""A library's log line on stderr (MLflow creating its store), not part of the message."""


def _one_line_error(capsys, *words: str) -> str:
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line and not LOG_LINE.match(line)]
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.mark.parametrize("content,words", [
    ("features:\n  workrs: 2\n", ["unknown key features.workrs"]),
    ("prepare:\n  min_agreement: high\n", ["prepare.min_agreement", "expected a number"]),
    ("prepare: [demo\n", ["not valid YAML"]),
    ("- prepare\n", ["expected a mapping"]),
])
def test_a_params_mistake_names_the_key(tmp_path, capsys, content, words):
    params = tmp_path / "params.yaml"
    params.write_text(content)
    assert main(["--params", str(params), "prepare"]) == 2
    _one_line_error(capsys, "configuration error", str(params), *words)


def test_a_corpus_folder_without_audio_is_one_clear_error(tmp_path, capsys):
    params = _params(tmp_path)
    (tmp_path / "nothing").mkdir()
    for corpus in ("ravdess", "emodb"):
        assert main(["--params", params, "prepare", "--corpus", corpus, "--data-dir",
                     str(tmp_path / "nothing"), "--out", str(tmp_path / "out")]) == 1
        _one_line_error(capsys, f"emoreason prepare: error: {corpus}: no .wav files")
    tables = write_cremad_fixture(tmp_path / "cremad", with_audio=False)
    assert main(["--params", params, "prepare", "--corpus", "cremad", "--data-dir",
                 str(tables), "--out", str(tmp_path / "out")]) == 1
    _one_line_error(capsys, "cremad: none of the 6 labelled clips has readable audio",
                    str(tables / "AudioWAV"), "does not exist")
    assert not (tmp_path / "out" / "manifest.parquet").exists()


def test_unknown_labels_and_duplicate_ids_are_reported_by_name(tmp_path, capsys):
    corpus = write_ravdess_fixture(tmp_path / "ravdess", actors=(1, 2), emotions=("01", "03"))
    unknown = ravdess_name("09", 1)  # emotion code 09 is not RAVDESS's
    write_tone(corpus / "Actor_01" / unknown)
    repeated = ravdess_name("03", 2, statement=1)
    write_tone(corpus / "backup" / repeated)
    out = tmp_path / "out"
    assert main(["--params", _params(tmp_path), "prepare", "--corpus", "ravdess",
                 "--data-dir", str(corpus), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "label codes outside the label set: {'code:09': 1}" in printed
    assert f"Actor_02/{repeated} and backup/{repeated}" in printed
    excluded = pd.read_csv(out / "excluded.csv")
    assert excluded.to_dict("records") == [{"utt_id": unknown[:-4],
                                            "reason": "no rating in the label set"}]
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert manifest["utt_id"].is_unique and repeated[:-4] in set(manifest["utt_id"])
    assert manifest.set_index("utt_id").loc[repeated[:-4], "audio_path"] == \
        f"Actor_02/{repeated}"


@pytest.mark.slow
def test_predict_takes_one_transcript_per_clip(matrix, tmp_path, capsys):
    paths, model = matrix
    params = _params(tmp_path)
    clip = str(paths["clipped"])
    assert main(["--params", params, "predict", "--model", str(model), clip, clip,
                 "--transcript", "kids are talking by the door", "--no-rationale"]) != 0
    out, err = capsys.readouterr()
    assert "--transcript was given 1 times for 2 clips" in out + err
    assert "Traceback" not in out + err
    assert main(["--params", params, "predict", "--model", str(model), clip, "--json",
                 "--transcript", "kids are talking by the door", "--no-rationale"]) == 0
    out, _ = capsys.readouterr()
    result = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    assert result["transcript"] == "kids are talking by the door"
