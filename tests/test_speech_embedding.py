"""The optional pretrained clip embedding (`features.speech_embedding: moonshine`): measured by
the features stage, normalised per speaker, appended to the SpeechLM's prosody vector, and
measured the same way for a served clip."""
import json

import numpy as np
import pandas as pd
import pytest

from components.audio_io import read_audio
from components.config import FeaturesConfig, FeaturesGateConfig, SplitConfig
from components.features.moonshine import EMBEDDING_DIM, MoonshineDecoder, pooled_embedding
from components.features.stage import build_features
from components.gates.features_gate import with_derived_columns
from components.speechlm.prosody_vector import (
    PROSODY_DIM,
    load_stats,
    population_stats,
    raw_vectors,
    save_stats,
    training_vectors,
    vector_names,
)
from components.speechlm.zeroshot import clip_cues
from tests.demo_fixture import demo_manifest


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    root = tmp_path_factory.mktemp("embedding")
    df, _ = demo_manifest(root, 8, 2, 3, SplitConfig(train=0.5, dev=0.0, test=0.5))
    config = dict(workers=1, frames=False, cache_dir=str(root / "cache"))
    plain, levels = build_features(df, root / "audio", FeaturesConfig(
        **config, speech_embedding="none"), root / "plain")
    with_embedding, _ = build_features(df, root / "audio", FeaturesConfig(
        **config, speech_embedding="moonshine"), root / "embedded", levels)
    return root, df, plain, with_embedding, levels


def test_the_features_stage_adds_the_embedding_only_when_asked(measured):
    _, df, plain, feats, _ = measured
    assert "speech_embedding" not in plain and "speech_embedding_spknorm" not in plain
    raw = np.array(feats["speech_embedding"].tolist())
    assert raw.shape == (len(df), EMBEDDING_DIM) and np.all(np.isfinite(raw))
    assert raw[:, EMBEDDING_DIM // 2:].min() >= 0  # the second half is a standard deviation
    assert len({tuple(np.round(r, 4)) for r in raw}) == len(df)  # clips differ
    norm = np.array(feats["speech_embedding_spknorm"].tolist())
    for speaker in feats["speaker"].unique():
        rows = (feats["speaker"] == speaker).to_numpy()
        np.testing.assert_allclose(norm[rows].mean(0), 0.0, atol=1e-4)
    # the embedding adds columns; everything else is what the stage measured without it
    shared = [c for c in plain.columns if c not in ("cache_key", "frames_path")]
    pd.testing.assert_frame_equal(plain[shared], feats[shared])
    derived = with_derived_columns(feats, FeaturesGateConfig())
    assert not {"speech_embedding", "speech_embedding_spknorm"} & set(derived.columns)


def test_the_prosody_vector_appends_the_embedding(measured, tmp_path):
    _, _, plain, feats, _ = measured
    assert len(vector_names(plain)) == PROSODY_DIM
    names = vector_names(feats)
    assert len(names) == PROSODY_DIM + EMBEDDING_DIM
    ids = set(feats["utt_id"])
    vectors = training_vectors(feats, ids)
    first = feats.iloc[0]
    np.testing.assert_allclose(vectors[first["utt_id"]], np.nan_to_num(np.concatenate(
        [first["egemaps_spknorm"], first["speech_embedding_spknorm"]])).astype(np.float32))
    stats = population_stats(feats, ids)
    assert stats["names"] == names and len(stats["mean"]) == len(names)
    save_stats(tmp_path, stats)
    assert load_stats(tmp_path)["names"] == names
    with pytest.raises(ValueError, match="features.speech_embedding"):
        raw_vectors(plain, len(names))  # a model with the embedding, features without it
    with pytest.raises(ValueError, match="the model takes"):
        raw_vectors(feats, PROSODY_DIM + 1)
    (tmp_path / "prosody_norm.json").write_text(json.dumps({**stats, "names": names[:-1] + ["x"]}))
    with pytest.raises(ValueError, match="other eGeMAPS features"):
        load_stats(tmp_path)


def test_a_served_clip_gets_the_embedding_the_features_stage_measured(measured):
    root, df, _, feats, levels = measured
    (root / "levels.json").write_text(json.dumps(levels))
    row = feats.iloc[0]
    path = root / "audio" / df.set_index("utt_id").loc[row["utt_id"], "audio_path"]
    served = clip_cues([path], "moonshine", root / "levels.json", speech_embedding="moonshine")
    np.testing.assert_allclose(served.iloc[0]["speech_embedding"], row["speech_embedding"],
                               rtol=1e-5, atol=1e-5)
    assert "speech_embedding" not in clip_cues([path], "moonshine", root / "levels.json")
    # nothing served reads voice quality, so it is not measured
    assert np.isnan(served.iloc[0]["hnr_db"]) and np.isfinite(row["hnr_db"])
    assert "hnr_db:not_measured" in served.iloc[0]["flags"]


def test_a_model_with_the_embedding_measures_it_for_served_clips(measured, tmp_path):
    from components.serve.predictor import load_predictor
    from tests.tiny_models import save_tiny_model_folder

    root, df, _, feats, _ = measured
    folder = save_tiny_model_folder(tmp_path / "model", speech_embedding="moonshine")
    predictor = load_predictor(folder)
    assert predictor.model.config.prosody_dim == PROSODY_DIM + EMBEDDING_DIM
    audio = [read_audio(root / "audio" / p, 16000)[0] for p in df["audio_path"][:2]]
    clips = predictor.measure_audio(audio)
    # the saved statistics are mean 0, std 1: an unknown speaker's vector is the raw one
    measured_rows = feats.set_index("utt_id")
    for clip, utt_id in zip(clips, df["utt_id"][:2]):
        np.testing.assert_allclose(clip.prosody[PROSODY_DIM:],
                                   measured_rows.loc[utt_id, "speech_embedding"], rtol=1e-4, atol=1e-4)
    answers = predictor.predict_clips(clips, rationale=False)
    assert all(a["label"] in predictor.labels for a in answers)
    plain = load_predictor(save_tiny_model_folder(tmp_path / "plain"))
    assert len(plain.measure_audio(audio[:1])[0].prosody) == PROSODY_DIM


def test_too_little_audio_has_no_embedding():
    decoder = MoonshineDecoder()
    assert np.all(np.isnan(pooled_embedding(decoder, np.zeros(100, np.float32))))
    assert np.all(np.isnan(pooled_embedding(decoder, np.full(16000, np.nan, np.float32))))
    assert np.all(np.isfinite(pooled_embedding(decoder, np.zeros(16000, np.float32))))


def test_the_embedding_of_a_transcribed_clip_reuses_the_encoder_pass(measured, monkeypatch):
    from components.features.asr import MoonshineTranscriber

    root, df, _, _, _ = measured
    audio = read_audio(root / "audio" / df["audio_path"].iloc[1], 16000)[0] * 0.9  # unseen
    expected = pooled_embedding(MoonshineDecoder(), audio)
    transcriber = MoonshineTranscriber()
    decoder = transcriber._decoder
    runs = []
    run = decoder._encoder.run
    monkeypatch.setattr(decoder._encoder, "run", lambda *a, **k: runs.append(1) or run(*a, **k),
                        raising=False)
    transcriber.transcribe(audio)
    np.testing.assert_array_equal(pooled_embedding(decoder, audio), expected)
    assert len(runs) == 1
    pooled_embedding(decoder, audio[:-160])  # other audio is encoded
    assert len(runs) == 2
