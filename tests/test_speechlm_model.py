"""The SpeechLM hears its audio on every path (forward, TRL's fused head, generate), trains only
what it should, and survives save/load and the merged export; tiny random models, CPU, offline."""
import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import LlamaForCausalLM

from components.speechlm import io as speechlm_io
from components.speechlm.config import SpeechLMConfig
from components.speechlm.encoders import FramesEncoder, collate_frames
from components.speechlm.io import (
    build_speechlm,
    export_merged,
    load_speechlm,
    save_speechlm,
)
from components.speechlm.model import IGNORE, AudioPlaceholderMismatch
from tests.tiny_models import TINY_SPEECHLM, save_tiny_lm

TINY_NAME = "bundled:tiny-test-lm"


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """A 2-layer random Llama (hidden 64) with the bundled SmolLM2 tokenizer, saved to a folder."""
    return save_tiny_lm(tmp_path_factory.mktemp("tiny_lm"))


@pytest.fixture
def built(tiny_lm, monkeypatch):
    """A SpeechLM over the tiny LM, configured by a name that resolves to its folder (as
    `bundled:` names resolve to a cache folder)."""
    monkeypatch.setattr(speechlm_io, "resolve_model", lambda name: str(tiny_lm) if name == TINY_NAME else name)
    torch.manual_seed(1)
    return build_speechlm(TINY_NAME, **TINY_SPEECHLM)


def _prompts(model, tokenizer, n_tokens: list[int]) -> dict:
    """Left-padded chat-like prompts with exactly n audio placeholders each."""
    token = model.config.audio_token
    texts = [f"Listen: {token * n}\nEmotion:" for n in n_tokens]
    return tokenizer(texts, padding=True, return_tensors="pt")


def _soft_token_counts(model, audio_mask: torch.Tensor) -> list[int]:
    """Placeholders per clip for a batch from `featurize` (its audio_mask)."""
    return [model.n_audio_tokens(int(n)) for n in audio_mask.sum(-1).tolist()]


def _batch(model, tokenizer, lengths=(120, 80), seed=0):
    """Random [T, 83] frame features for clips of the given frame counts, and matching prompts."""
    g = torch.Generator().manual_seed(seed)
    values, mask = collate_frames([torch.randn(n, 83, generator=g) for n in lengths])
    return _prompts(model, tokenizer, _soft_token_counts(model, mask)), values, mask


def _tone(seconds: float, f0: float) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * np.pi * f0 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def test_build_loads_the_pretrained_lm_and_adds_the_placeholder(tiny_lm, built):
    model, tokenizer = built
    source = LlamaForCausalLM.from_pretrained(tiny_lm)
    assert model.config.audio_token_id == len(tokenizer) - 1 == 49152
    assert tokenizer.convert_ids_to_tokens(model.config.audio_token_id) == "<|audio|>"
    emb = model.get_input_embeddings().weight
    assert emb.shape == (49153, 64) and model.get_output_embeddings().weight is emb  # tied as in the LM
    torch.testing.assert_close(emb[:49152], source.model.embed_tokens.weight, rtol=0, atol=0)
    torch.testing.assert_close(emb[49152], source.model.embed_tokens.weight.mean(0))
    base = model.model.language_model.layers[1].mlp.down_proj.weight
    torch.testing.assert_close(base, source.model.layers[1].mlp.down_proj.weight, rtol=0, atol=0)
    assert model.base_model is model.model
    with pytest.raises(TypeError, match="unknown SpeechLM settings"):
        build_speechlm(TINY_NAME, encoder_dims=32)


def test_soft_token_count_is_a_function_of_the_frame_count(built):
    model, _ = built
    assert model.n_audio_tokens(300) == 25  # 3 s: 100 -> 25 frames/s, 3 frames per token
    lengths = [1, 7, 64, 99, 300]
    values, mask = collate_frames([torch.randn(n, 83) for n in lengths])
    _, soft_mask = model.model.encode_audio(values, mask)
    assert soft_mask.sum(1).tolist() == [model.n_audio_tokens(n) for n in lengths]
    # A clip encodes the same alone as in a padded batch.
    alone, _ = model.model.encode_audio(values[1:2, :7], mask[1:2, :7])
    batched, _ = model.model.encode_audio(values, mask)
    torch.testing.assert_close(batched[1, : alone.shape[1]], alone[0], atol=1e-5, rtol=1e-4)


def test_logits_follow_the_audio_in_forward_and_in_trls_fused_head(built):
    from trl.trainer.utils import add_fused_lm_head

    model, tokenizer = built
    enc, values, mask = _batch(model, tokenizer)
    other = torch.randn_like(values)
    with torch.no_grad():
        logits_a = model(**enc, audio_values=values, audio_mask=mask).logits
        logits_b = model(**enc, audio_values=other, audio_mask=mask).logits
        assert (logits_a - logits_b).abs().max() > 1e-3
        # TRL's path: the backbone (base_model_prefix) then the output embeddings.
        hidden = model.base_model(**enc, audio_values=values, audio_mask=mask).last_hidden_state
        torch.testing.assert_close(model.get_output_embeddings()(hidden), logits_a, atol=1e-5, rtol=1e-4)

    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, IGNORE)
    add_fused_lm_head(model)
    with torch.no_grad():
        fused_a = model(**enc, audio_values=values, audio_mask=mask, labels=labels, fused_lm_head=True)
        fused_b = model(**enc, audio_values=other, audio_mask=mask, labels=labels, fused_lm_head=True)
    valid = fused_a.label_mask
    assert valid.sum() == (labels[:, 1:] != IGNORE).sum()
    assert (fused_a.log_probs - fused_b.log_probs)[valid].abs().max() > 1e-3
    expected = torch.log_softmax(logits_a[:, :-1], -1).gather(-1, labels[:, 1:].clamp(min=0)[..., None])[..., 0]
    torch.testing.assert_close(fused_a.log_probs[valid], expected[valid], atol=1e-4, rtol=1e-4)


def test_loss_is_the_mean_cross_entropy_over_labels_not_ignored(built):
    model, tokenizer = built
    enc, values, mask = _batch(model, tokenizer)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, IGNORE)
    labels[:, : labels.shape[1] - 3] = IGNORE  # like a prompt: only the last tokens are scored
    with torch.no_grad():
        out = model(**enc, audio_values=values, audio_mask=mask, labels=labels)
    targets, logits = labels[:, 1:], out.logits[:, :-1].float()
    kept = targets != IGNORE
    assert 0 < kept.sum() < kept.numel()
    expected = -torch.log_softmax(logits, -1).gather(-1, targets.clamp(min=0)[..., None])[..., 0][kept].mean()
    torch.testing.assert_close(out.loss, expected, atol=1e-5, rtol=1e-5)


def test_training_moves_lora_encoder_and_projector_and_not_the_lm(built):
    model, tokenizer = built
    enc, values, mask = _batch(model, tokenizer, lengths=(150, 90))
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, IGNORE)
    labels = labels.masked_fill(labels == model.config.audio_token_id, IGNORE)
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert any("lora_A" in n for n in trainable) and any("lora_B" in n for n in trainable)
    assert any(n.startswith("model.audio_encoder.") for n in trainable)
    assert any(n.startswith("model.projector.") for n in trainable)
    assert all("lora_" not in n and not n.startswith(("model.audio_encoder.", "model.projector."))
               for n in frozen)
    assert "model.language_model.embed_tokens.weight" in frozen

    def loss():
        with torch.no_grad():
            return model.eval()(**enc, audio_values=values, audio_mask=mask, labels=labels).loss.item()

    before = loss()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    for _ in range(8):
        optimizer.zero_grad()
        out = model(**enc, audio_values=values, audio_mask=mask, labels=labels)
        out.loss.backward()
        optimizer.step()
    assert loss() < before - 0.05
    params = dict(model.named_parameters())
    for prefix in ("lora_B", "model.audio_encoder.conv1", "model.projector.mlp"):
        assert any(prefix in n and not torch.equal(params[n], v) for n, v in trainable.items()), prefix
    for n, v in frozen.items():
        assert torch.equal(params[n], v), n


def test_save_load_and_merged_export_give_the_same_logits(tiny_lm, built, tmp_path):
    model, tokenizer = built
    enc, values, mask = _batch(model, tokenizer)
    with torch.no_grad():  # make the adapter non-trivial (LoRA B starts at zero)
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
        expected = model(**enc, audio_values=values, audio_mask=mask).logits

    folder = save_speechlm(model, tokenizer, tmp_path / "adapter")
    assert sorted(p.name for p in folder.iterdir() if p.suffix in {".safetensors", ".bin", ".pt", ".pth"}) == \
        ["adapter_model.safetensors", "audio.safetensors"]
    with safe_open(str(folder / "audio.safetensors"), framework="pt") as f:
        assert {k.split(".")[0] for k in f.keys()} == {"projector", "audio_encoder"}
    for name in ("config.json", "adapter_config.json"):  # the LM as configured, never its resolved folder
        text = (folder / name).read_text()
        assert TINY_NAME in text and str(tiny_lm) not in text
    loaded, loaded_tok = load_speechlm(folder)
    assert loaded_tok.convert_tokens_to_ids("<|audio|>") == model.config.audio_token_id
    assert loaded_tok.padding_side == "left" and load_speechlm(folder, "right")[1].padding_side == "right"
    assert loaded.has_lora and loaded.generation_config.suppress_tokens == [model.config.audio_token_id]
    with torch.no_grad():
        torch.testing.assert_close(loaded(**enc, audio_values=values, audio_mask=mask).logits, expected,
                                   rtol=0, atol=0)

    out = export_merged(folder, tmp_path / "merged")
    assert not (out / "adapter_model.safetensors").exists()
    assert (out / "language_model" / "model.safetensors").is_file()
    merged, _ = load_speechlm(out)
    assert merged.config.merged and not merged.has_lora
    assert not any(p.requires_grad for n, p in merged.model.language_model.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(merged(**enc, audio_values=values, audio_mask=mask).logits, expected,
                                   atol=1e-4, rtol=1e-4)


def test_batched_generation_over_different_lengths_equals_one_by_one(built, monkeypatch):
    model, tokenizer = built
    encodes = []
    encode_audio = model.model.encode_audio
    monkeypatch.setattr(model.model, "encode_audio", lambda *a, **k: encodes.append(1) or encode_audio(*a, **k))
    clips = [_tone(0.9, 140.0), _tone(0.45, 220.0), _tone(1.3, 180.0)]
    values, mask = model.featurize(clips)
    counts = _soft_token_counts(model, mask)
    assert len(set(counts)) == 3 and tokenizer.padding_side == "left"
    enc = _prompts(model, tokenizer, counts)
    with torch.no_grad():
        batched = model.generate(**enc, audio_values=values, audio_mask=mask, max_new_tokens=6,
                                 do_sample=False)
        new = batched[:, enc["input_ids"].shape[1]:]
        assert len(encodes) == 1  # the audio is encoded on the prefill step only (KV cache after)
        for i, clip in enumerate(clips):
            v, m = model.featurize([clip])
            one = _prompts(model, tokenizer, [counts[i]])
            single = model.generate(**one, audio_values=v, audio_mask=m, max_new_tokens=6, do_sample=False)
            assert single[0, one["input_ids"].shape[1]:].tolist() == new[i].tolist()
    assert not (new == model.config.audio_token_id).any()


def test_placeholder_count_mismatch_is_a_clear_error(built):
    model, tokenizer = built
    _, values, mask = _batch(model, tokenizer)
    counts = _soft_token_counts(model, mask)
    wrong = _prompts(model, tokenizer, [counts[0], counts[1] + 1])
    with pytest.raises(AudioPlaceholderMismatch, match=rf"sample 1: {counts[1] + 1} placeholders, {counts[1]} soft"):
        model(**wrong, audio_values=values, audio_mask=mask)
    right = _prompts(model, tokenizer, counts)
    with pytest.raises(AudioPlaceholderMismatch, match="no audio_values"):
        model(**right)
    backwards = mask.flip(1)
    with pytest.raises(ValueError, match="right padding"):
        model(**right, audio_values=values, audio_mask=backwards)


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    """A 2-layer random Whisper (d_model 64) with its feature extractor, saved to a folder."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    whisper_dir = tmp_path_factory.mktemp("tiny_whisper")
    torch.manual_seed(2)
    WhisperModel(WhisperConfig(
        d_model=64, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=128, decoder_ffn_dim=128, num_mel_bins=80, vocab_size=100,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
    )).save_pretrained(whisper_dir)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(whisper_dir)
    return whisper_dir


def test_whisper_encoder_path(tiny_lm, tiny_whisper, tmp_path):
    whisper_dir = tiny_whisper
    model, tokenizer = build_speechlm(str(tiny_lm), encoder=f"whisper:{whisper_dir}", lora_r=4, lora_alpha=8)
    assert not any(p.requires_grad for p in model.model.audio_encoder.parameters())  # frozen by default

    clips = [_tone(1.0, 150.0), _tone(0.5, 230.0)]
    values, mask = model.featurize(clips)
    assert values.shape == (2, 80, 3000) and mask.sum(1).tolist() == [100, 50]
    counts = _soft_token_counts(model, mask)
    assert counts == [9, 5]  # 50 frames/s, 6 per token
    enc = _prompts(model, tokenizer, counts)
    with torch.no_grad():
        a = model(**enc, audio_values=values, audio_mask=mask).logits
        b = model(**enc, audio_values=values.flip(-1), audio_mask=mask).logits
    assert (a - b).abs().max() > 1e-3

    folder = save_speechlm(model, tokenizer, tmp_path / "saved")
    with safe_open(str(folder / "audio.safetensors"), framework="pt") as f:
        assert not any(k.startswith("audio_encoder.") for k in f.keys())  # reloaded from its source
    loaded, _ = load_speechlm(folder)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**enc, audio_values=values, audio_mask=mask).logits, a, rtol=0, atol=0)
    with pytest.raises(ValueError, match="hears at most 30 s"):
        model.featurize([np.zeros(16000 * 31, dtype=np.float32)])


def test_whisper_encoder_with_lora_trains_only_its_adapter(tiny_lm, tiny_whisper, tmp_path):
    model, tokenizer = build_speechlm(str(tiny_lm), encoder=f"whisper:{tiny_whisper}",
                                      encoder_lora_r=4, lora_r=4, lora_alpha=8)
    trainable = [n for n, p in model.model.audio_encoder.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".")[-4] for n in trainable} == {"q_proj", "k_proj", "v_proj", "out_proj"}
    values, mask = model.featurize([_tone(1.0, 150.0), _tone(0.5, 230.0)])
    enc = _prompts(model, tokenizer, _soft_token_counts(model, mask))
    with torch.no_grad():
        before = model(**enc, audio_values=values, audio_mask=mask).logits
    frozen = {n: p.detach().clone() for n, p in model.model.audio_encoder.named_parameters()
              if "lora_" not in n}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, IGNORE)
    for _ in range(2):
        model(**enc, audio_values=values, audio_mask=mask, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    for name, param in model.model.audio_encoder.named_parameters():
        if "lora_" not in name:
            assert torch.equal(param, frozen[name])  # Whisper's own weights stay as loaded
    assert any(p.abs().sum() > 0 for n, p in model.model.audio_encoder.named_parameters()
               if "lora_B" in n)  # the adapter moved (B starts at zero)
    with torch.no_grad():
        trained = model(**enc, audio_values=values, audio_mask=mask).logits
    assert (trained - before).abs().max() > 1e-4

    folder = save_speechlm(model, tokenizer, tmp_path / "saved")
    with safe_open(str(folder / "audio.safetensors"), framework="pt") as f:
        stored = [k for k in f.keys() if k.startswith("audio_encoder.")]
    assert stored and all("lora_" in k for k in stored)  # Whisper itself comes from its source
    loaded, _ = load_speechlm(folder)
    merged, _ = load_speechlm(export_merged(folder, tmp_path / "merged"))
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(loaded(**enc, audio_values=values, audio_mask=mask).logits,
                                   trained, rtol=0, atol=0)
        torch.testing.assert_close(merged(**enc, audio_values=values, audio_mask=mask).logits,
                                   trained, rtol=1e-4, atol=1e-4)
    with pytest.raises(Exception, match="encoder_lora_r adapts a pretrained"):  # a config error
        build_speechlm(str(tiny_lm), encoder_lora_r=4)


def test_prosody_token_is_heard_saved_and_batched(tiny_lm, monkeypatch, tmp_path):
    monkeypatch.setattr(speechlm_io, "resolve_model", lambda name: str(tiny_lm) if name == TINY_NAME else name)
    torch.manual_seed(2)
    model, tokenizer = build_speechlm(TINY_NAME, prosody_dim=88, **TINY_SPEECHLM)
    plain, _ = build_speechlm(TINY_NAME, **TINY_SPEECHLM)
    assert model.n_audio_tokens(120) == plain.n_audio_tokens(120) + 1  # one placeholder more
    enc, values, mask = _batch(model, tokenizer)
    prosody = torch.randn(2, 88)
    with torch.no_grad():
        logits = model(**enc, audio_values=values, audio_mask=mask, prosody_values=prosody).logits
        other = model(**enc, audio_values=values, audio_mask=mask, prosody_values=-prosody).logits
        assert (logits - other).abs().max() > 1e-3  # the LM hears the prosody vector
        hidden = model.base_model(**enc, audio_values=values, audio_mask=mask,
                                  prosody_values=prosody).last_hidden_state
        torch.testing.assert_close(model.get_output_embeddings()(hidden), logits, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="needs prosody_values"):
        model(**enc, audio_values=values, audio_mask=mask)
    assert model.model.prosody_projector[0].weight.requires_grad

    folder = save_speechlm(model, tokenizer, tmp_path / "prosody")
    with safe_open(str(folder / "audio.safetensors"), framework="pt") as f:
        assert {k.split(".")[0] for k in f.keys()} == {"projector", "prosody_projector", "audio_encoder"}
    loaded, _ = load_speechlm(folder)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**enc, audio_values=values, audio_mask=mask,
                                          prosody_values=prosody).logits, logits, rtol=0, atol=0)
        batched = model.generate(**enc, audio_values=values, audio_mask=mask, prosody_values=prosody,
                                 max_new_tokens=5, do_sample=False)[:, enc["input_ids"].shape[1]:]
        for i in range(2):
            one = _prompts(model, tokenizer, [_soft_token_counts(model, mask[i:i + 1, :int(mask[i].sum())])[0]])
            single = model.generate(**one, audio_values=values[i:i + 1, :int(mask[i].sum())],
                                    audio_mask=mask[i:i + 1, :int(mask[i].sum())],
                                    prosody_values=prosody[i:i + 1], max_new_tokens=5, do_sample=False)
            assert single[0, one["input_ids"].shape[1]:].tolist() == batched[i].tolist()


def test_spec_augment_masks_only_while_training_and_only_valid_frames():
    from components.speechlm.encoders import spec_augment

    config = SpeechLMConfig(text_config={"model_type": "llama"}, spec_augment=True,
                            spec_time_masks=2, spec_time_width=0.2, spec_feature_masks=2,
                            spec_feature_width=8)
    torch.manual_seed(0)
    x = torch.ones(64, 50, 83)
    mask = torch.arange(50)[None, :] < torch.randint(10, 51, (64, 1))
    out = spec_augment(x, mask, config)
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    masked_features = (out == 0).all(1)  # features masked in every frame of a clip
    assert masked_features.sum(1).max() <= 16 and masked_features.any()
    time_masked = ((out == 0).all(2) & mask).sum(1).float()
    assert (time_masked <= 2 * (0.2 * mask.sum(1) + 1)).all() and time_masked.any()
    encoder = FramesEncoder(config).eval()
    values = torch.randn(2, 40, 83)
    frame_mask = torch.ones(2, 40, dtype=torch.bool)
    torch.testing.assert_close(encoder(values, frame_mask)[0], encoder(values, frame_mask)[0])


def test_feature_standardizer_fits_train_frames_and_is_saved_with_the_encoder():
    from components.speechlm.encoders import FeatureStandardizer

    config = SpeechLMConfig(text_config={"model_type": "llama"}, frame_norm="feature")
    encoder = FramesEncoder(config)
    assert isinstance(encoder.input_norm, FeatureStandardizer)
    rng = np.random.default_rng(0)
    arrays = [rng.normal(5.0, 3.0, size=(int(n), 83)).astype(np.float32) for n in (30, 70)]
    arrays[0][:, 82] = 40.0  # an energy-like channel far from the others
    encoder.input_norm.fit(arrays)
    z = encoder.input_norm(torch.from_numpy(np.concatenate(arrays)))
    torch.testing.assert_close(z.mean(0), torch.zeros(83), atol=1e-4, rtol=0)
    assert torch.allclose(z[:, :82].std(0), torch.ones(82), atol=1e-3)
    state = encoder.state_dict()
    assert "input_norm.mean" in state and "input_norm.std" in state
    fresh = FramesEncoder(config)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.input_norm.mean, encoder.input_norm.mean)
    with pytest.raises(Exception, match="frame_norm must be 'layer' or 'feature'"):
        SpeechLMConfig(text_config={"model_type": "llama"}, frame_norm="batch")
