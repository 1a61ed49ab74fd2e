"""Train/serve parity of the prosody token: training batches carry the population-normalised
vector for the examples marked so, and the SFT stage's dev check decodes every clip twice,
with the speaker known (speaker-normalised) and unknown (normalised as a served clip is)."""
import numpy as np
import pandas as pd
import pytest
import torch

from components.config import SFTConfig
from components.features.frames import FRAME_FEATURE_NAMES, write_shard
from components.speechlm.collate import AudioSource, SpeechCollator
from components.speechlm.io import build_speechlm
from components.speechlm.prosody_vector import (
    PROSODY_DIM,
    clip_vectors,
    population_stats,
)
from components.speechlm.sft_data import SftDataConfig, build_sft_examples
from components.speechlm.train import evaluate
from tests.tiny_models import TINY_SPEECHLM, save_tiny_lm

LABELS = ["neutral", "happy", "sad", "angry"]
N_TRAIN, N_DEV = 8, 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny SpeechLM with a prosody token; dev clips whose feature 0 is above their speaker's
    mean (speaker-normalised +1) but far below the training population's (raw -5)."""
    root = tmp_path_factory.mktemp("prosody_norm")
    model, tokenizer = build_speechlm(str(save_tiny_lm(root / "lm")), prosody_dim=PROSODY_DIM,
                                      **TINY_SPEECHLM)
    ids = [f"t{i}" for i in range(N_TRAIN)] + [f"d{i}" for i in range(N_DEV)]
    raw = np.random.default_rng(0).normal(0.0, 1.0, (len(ids), PROSODY_DIM))
    raw[N_TRAIN:, 0] = -5.0
    spknorm = np.zeros_like(raw)
    spknorm[:, 0] = 1.0
    features = pd.DataFrame({
        "utt_id": ids, "egemaps": list(raw), "egemaps_spknorm": list(spknorm),
        "transcript": "hello there", "pitch_level": "unknown", "energy_level": "unknown",
        "rate_level": "unknown", "intonation": "uncertain"})
    features.to_parquet(root / "features.parquet", index=False)
    manifest = pd.DataFrame({"utt_id": ids, "label": "happy",
                             "split": ["train"] * N_TRAIN + ["dev"] * N_DEV})
    rationales = [{"utt_id": u, "label": "happy", "kept": True, "rationale": "Bright voice."}
                  for u in ids[:N_TRAIN]]
    examples = build_sft_examples(features, manifest, rationales, SftDataConfig(
        perception_ratio=0, splits=["train", "dev"], population_norm_share=0.5))
    write_shard(root / "frames" / "shard-00000.safetensors",
                [(u, np.zeros((40, len(FRAME_FEATURE_NAMES)), np.float32)) for u in ids])
    pd.DataFrame({"utt_id": ids, "shard": "shard-00000.safetensors", "n_frames": 40}) \
        .to_parquet(root / "frames" / "index.parquet", index=False)
    stats = population_stats(features, set(ids[:N_TRAIN]))
    source = AudioSource.from_features(model, root / "frames", manifest, root, set(ids),
                                       features, stats)
    collator = SpeechCollator(tokenizer, source, LABELS)
    return root, model, tokenizer, collator, examples, raw, stats


def test_training_batches_take_each_examples_normalisation(setup):
    _, _, _, collator, examples, raw, stats = setup
    train = [e for e in examples if e["split"] == "train"]
    assert sum(e["prosody_norm"] == "population" for e in train) == N_TRAIN // 2
    batch = collator(train)
    population = clip_vectors(raw[:N_TRAIN], stats)
    for i, example in enumerate(train):
        expected = population[i] if example["prosody_norm"] == "population" else \
            np.eye(PROSODY_DIM, dtype=np.float32)[0]
        np.testing.assert_array_equal(batch["prosody_values"][i].numpy(), expected)


def test_a_population_example_without_population_statistics_is_an_error(setup):
    root, model, tokenizer, _, examples, _, _ = setup
    features = pd.read_parquet(root / "features.parquet")
    manifest = pd.DataFrame({"utt_id": features["utt_id"], "split": "train"})
    source = AudioSource.from_features(model, root / "frames", manifest, root,
                                       set(features["utt_id"]), features)
    marked = next(e for e in examples if e["prosody_norm"] == "population")
    with pytest.raises(ValueError, match="population.s statistics"):
        SpeechCollator(tokenizer, source, LABELS)([marked])


def test_dev_accuracy_is_reported_with_the_speaker_known_and_unknown(setup, monkeypatch):
    root, model, tokenizer, collator, examples, raw, stats = setup
    dev = [e for e in examples if e["split"] == "dev"]
    assert any(e["prosody_norm"] == "population" for e in dev)  # evaluation sets its own
    seen = []

    def generate(input_ids, prosody_values, **kwargs):
        """Answers happy when the prosody token's feature 0 is above average, else sad."""
        seen.append(prosody_values.clone())
        tails = [tokenizer(f"Emotion: {'happy' if v > 0 else 'sad'}\nRationale: x",
                           add_special_tokens=False)["input_ids"] for v in prosody_values[:, 0]]
        width = max(len(t) for t in tails)
        tails = [t + [tokenizer.pad_token_id] * (width - len(t)) for t in tails]
        return torch.cat([input_ids, torch.tensor(tails)], 1)

    monkeypatch.setattr(model, "generate", generate)
    cfg = SFTConfig(features=str(root / "features.parquet"), eval_clips=N_DEV)
    result = evaluate(model, collator, dev, LABELS, cfg, ["happy"] * N_TRAIN)
    assert len(seen) == 2
    known, unknown = (s.numpy() for s in seen)
    np.testing.assert_array_equal(known, np.tile(np.eye(PROSODY_DIM, dtype=np.float32)[0],
                                                 (N_DEV, 1)))  # egemaps_spknorm
    np.testing.assert_allclose(unknown, clip_vectors(raw[N_TRAIN:], stats))  # as served
    assert result["dev_accuracy"] == 1.0 and result["dev_accuracy_unknown_speaker"] == 0.0
    assert [s["predicted"] for s in result["samples"]] == ["happy"] * N_DEV
