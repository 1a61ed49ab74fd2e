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
