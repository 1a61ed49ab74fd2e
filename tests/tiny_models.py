"""Tiny random language models for fast tests, saved like real checkpoints."""
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from components.models.bundled import resolve_model


def save_tiny_lm(folder: Path, seed: int = 0, layers: int = 2, hidden: int = 64,
                 kv_heads: int = 4, tie: bool = True) -> Path:
    """A random Llama with the bundled SmolLM2 tokenizer and chat template."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("bundled:smollm2-135m-instruct"))
    torch.manual_seed(seed)
    lm = LlamaForCausalLM(LlamaConfig(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=kv_heads, intermediate_size=2 * hidden, vocab_size=len(tokenizer),
        max_position_embeddings=1024, tie_word_embeddings=tie,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    lm.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


TINY_SPEECHLM = {"encoder_dim": 32, "encoder_heads": 2, "encoder_layers": 1, "lora_r": 4,
                 "lora_alpha": 8}


def save_tiny_model_folder(folder: Path, labels: list[str] | None = None, seed: int = 0,
                           merged: bool = True, asr: str = "moonshine",
                           speech_embedding: str = "none") -> Path:
    """A model folder shaped like `emoreason sft` writes it (random weights): the SpeechLM with
    a prosody token, task.json, levels.json and prosody_norm.json. `merged`: LoRA folded in,
    self-contained like `emoreason model export`; else an adapter folder whose base LM is
    saved beside it (`<folder>-lm`). `speech_embedding: moonshine`: the prosody vector also
    holds the clip embedding, as after `features.speech_embedding: moonshine`."""
    import numpy as np
    import pandas as pd

    from components.features.egemaps import EGEMAPS_NAMES
    from components.features.levels import fit_levels, save_levels
    from components.features.moonshine import EMBEDDING_DIM
    from components.speechlm.io import build_speechlm, save_speechlm, write_task
    from components.speechlm.prosody_vector import save_stats

    folder = Path(folder)
    lm = save_tiny_lm(folder.parent / f"{folder.name}-lm", seed=seed)
    torch.manual_seed(seed)
    names = list(EGEMAPS_NAMES) + ([f"speech_embedding_{i}" for i in range(EMBEDDING_DIM)]
                                   if speech_embedding != "none" else [])
    model, tokenizer = build_speechlm(str(lm), prosody_dim=len(names), **TINY_SPEECHLM)
    if merged:
        model.merge_lora()
    save_speechlm(model, tokenizer, folder)
    rng = np.random.default_rng(seed)
    n = 12
    levels = fit_levels(pd.DataFrame({
        "corpus": "demo", "gender": ["female", "male"] * (n // 2), "split": "train",
        "f0_median_hz": rng.uniform(90, 260, n), "f0_range_st": rng.uniform(2, 14, n),
        "energy_dbfs": rng.uniform(-35, -12, n), "rate_sps": rng.uniform(2.5, 6.5, n),
        "pause_ratio": rng.uniform(0, 0.3, n)}))
    save_levels(folder / "training_levels.json", levels)
    write_task(folder, "explain_after", "asr", list(labels or ["neutral", "happy", "sad", "angry"]),
               asr, folder / "training_levels.json", speech_embedding=speech_embedding)
    (folder / "training_levels.json").unlink()
    save_stats(folder, {"names": names, "n_clips": n,
                        "mean": [0.0] * len(names), "std": [1.0] * len(names)})
    return folder
