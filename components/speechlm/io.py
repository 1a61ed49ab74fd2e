"""Build a SpeechLM from a pretrained LM, and save, load and export it as one folder.

A saved folder (safetensors and JSON only, nothing pickled):
- config.json: the SpeechLMConfig, with the LM named as configured (e.g. `bundled:...`) and its config;
- generation_config.json and the tokenizer files (with the audio placeholder token);
- audio.safetensors: projector weights (the prosody projector's and the evidence tokens' too), and the encoder's unless it
  is a frozen pretrained encoder (then it is reloaded from its source, which the config names,
  and only its LoRA weights are stored when `encoder_lora_r` adapts it);
- adapter_config.json + adapter_model.safetensors: the LoRA adapter (PEFT's file names);
- merged exports instead hold `language_model/`, the LM with LoRA merged in (a transformers
  checkpoint), and always the full encoder (its LoRA merged in too), so serving needs nothing
  but the folder.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tokenizers import AddedToken
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from components.models.bundled import resolve_model
from components.speechlm.config import (
    DEFAULT_AUDIO_TOKEN,
    DEFAULT_LM,
    FRAMES_ENCODER,
    SpeechLMConfig,
)
from components.speechlm.model import SpeechLMForCausalLM

AUDIO_WEIGHTS = "audio.safetensors"
AUDIO_FORMAT = "emoreason-speechlm-audio-v1"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MERGED_LM_DIR = "language_model"
TASK_FILE = "task.json"
LEVELS_FILE = "levels.json"
_SET_BY_BUILD = {"text_config", "lm_name_or_path", "encoder", "use_lora", "audio_token_id",
                 "whisper_config", "whisper_feature_extractor", "merged", "tie_word_embeddings"}


def _load_tokenizer(path: str | Path, padding_side: str):
    # transformers does not save the padding side with the tokenizer, so it is set on every load.
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    return AutoTokenizer.from_pretrained(str(path), padding_side=padding_side)


def _load_lm(path: str | Path) -> PreTrainedModel:
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)


def _fit_embeddings(lm: PreTrainedModel, vocab_size: int, audio_token_id: int) -> None:
    """Grow the vocabulary to `vocab_size` and set the placeholder's rows to the mean of the rows
    before it: deterministic, so an adapter folder rebuilds the same LM from the base weights
    (the rows stay frozen; the placeholder's input embedding is overwritten by audio anyway)."""
    if lm.get_input_embeddings().num_embeddings < vocab_size:
        lm.resize_token_embeddings(vocab_size, mean_resizing=False)
    with torch.no_grad():
        weights = {id(m.weight): m.weight for m in (lm.get_input_embeddings(), lm.get_output_embeddings())}
        for weight in weights.values():
            weight[audio_token_id] = weight[:audio_token_id].mean(0)


def _load_whisper(source: str) -> tuple[torch.nn.Module, dict, dict]:
    """A pretrained Whisper encoder, its model config and its feature extractor settings."""
    from transformers import WhisperFeatureExtractor, WhisperModel

    whisper = WhisperModel.from_pretrained(source, dtype=torch.float32)
    config = whisper.config.to_dict()
    config.pop("_name_or_path", None)
    return whisper.get_encoder(), config, WhisperFeatureExtractor.from_pretrained(source).to_dict()


def build_speechlm(
    lm_name_or_path: str = DEFAULT_LM,
    encoder: str = FRAMES_ENCODER,
    lora: bool = True,
    padding_side: str = "left",
    **config,
) -> tuple[SpeechLMForCausalLM, PreTrainedTokenizerBase]:
    """A new SpeechLM (float32, CPU, eval mode) and its tokenizer with the audio placeholder added.

    `lm_name_or_path`: `bundled:<name>`, a hub id or a folder; `encoder`: `frames` or
    `whisper:<id or folder>`; `lora`: add a fresh LoRA adapter (else the LM stays frozen);
    `padding_side` of the tokenizer (left for batched generation); `config`: other
    SpeechLMConfig fields (e.g. tokens_per_second=8, lora_r=16, audio_dropout=0.1).
    """
    fields = {f.name for f in dataclasses.fields(SpeechLMConfig)} - _SET_BY_BUILD
    if unknown := sorted(set(config) - fields):
        raise TypeError(f"unknown SpeechLM settings {unknown}; known: {sorted(fields)}")
    lm_path = resolve_model(lm_name_or_path)
    tokenizer = _load_tokenizer(lm_path, padding_side)
    audio_token = config.get("audio_token", DEFAULT_AUDIO_TOKEN)
    if audio_token in tokenizer.get_vocab():
        raise ValueError(f"the LM's tokenizer already has a token {audio_token!r}; choose another audio_token")
    tokenizer.add_tokens([AddedToken(audio_token, special=True, normalized=False)], special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    audio_token_id = tokenizer.convert_tokens_to_ids(audio_token)

    lm = _load_lm(lm_path)
    _fit_embeddings(lm, max(len(tokenizer), lm.get_input_embeddings().num_embeddings), audio_token_id)
    lm.config.name_or_path = lm_name_or_path  # as configured, never a resolved cache path
    pretrained_encoder = None
    # A new config sets its attention implementation on its sub-configs: keep the LM's.
    speech_config = SpeechLMConfig(lm_name_or_path=lm_name_or_path, encoder=encoder, use_lora=lora,
                                   text_config=lm.config, audio_token_id=audio_token_id,
                                   attn_implementation=lm.config._attn_implementation, **config)
    if speech_config.is_whisper:
        pretrained_encoder, speech_config.whisper_config, speech_config.whisper_feature_extractor = \
            _load_whisper(speech_config.whisper_source)
    model = SpeechLMForCausalLM(speech_config, lm=lm, audio_encoder=pretrained_encoder)
    model.generation_config = _generation_config(lm.generation_config, tokenizer, audio_token_id)
    if lora:
        model.add_lora()
    return model.eval(), tokenizer


def _generation_config(base: GenerationConfig, tokenizer, audio_token_id: int) -> GenerationConfig:
    """The LM's generation settings, with its pad token and the placeholder never generated."""
    config = GenerationConfig.from_dict(base.to_dict())
    config.pad_token_id = tokenizer.pad_token_id
    config.suppress_tokens = [audio_token_id]
    return config


def _encoder_is_saved(config: SpeechLMConfig) -> bool:
    return config.merged or not config.is_whisper or config.train_pretrained_encoder


def save_speechlm(model: SpeechLMForCausalLM, tokenizer: PreTrainedTokenizerBase, folder: str | Path) -> Path:
    """Write the model and tokenizer to `folder` (see the module docstring for the layout)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config
    config.text_config.name_or_path = config.lm_name_or_path
    config.save_pretrained(folder)
    model.generation_config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)

    modules = {"projector": model.model.projector}
    if model.model.prosody_projector is not None:
        modules["prosody_projector"] = model.model.prosody_projector
    for name in ("evidence", "level_evidence"):
        if getattr(model.model, name) is not None:
            modules[name] = getattr(model.model, name)
    modules["audio_encoder"] = model.model.audio_encoder
    # A frozen pretrained encoder is reloaded from its source: only its LoRA weights, if any.
    tensors = {f"{prefix}.{k}": v.detach().contiguous().clone()
               for prefix, module in modules.items() for k, v in module.state_dict().items()
               if prefix != "audio_encoder" or _encoder_is_saved(config) or "lora_" in k}
    save_file(tensors, str(folder / AUDIO_WEIGHTS), metadata={"format": AUDIO_FORMAT})

    language_model = model.model.language_model
    if config.merged:
        if model.has_lora:
            raise ValueError("config says merged but the model still holds a LoRA adapter; call merge_lora()")
        with torch.device("meta"):
            shell = AutoModelForCausalLM.from_config(config.text_config)
        setattr(shell, shell.base_model_prefix, language_model)
        shell.set_output_embeddings(model.lm_head)
        shell.generation_config = model.generation_config
        shell.save_pretrained(folder / MERGED_LM_DIR)
    elif model.has_lora:
        from peft.functional import get_peft_model_state_dict

        lora_config = language_model.peft_config["default"]
        lora_config.base_model_name_or_path = config.lm_name_or_path
        lora_config.save_pretrained(str(folder))
        # The resized embedding rows are rebuilt from the base LM, not stored with the adapter.
        state = get_peft_model_state_dict(language_model, save_embedding_layers=False)
        save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(folder / ADAPTER_WEIGHTS),
                  metadata={"format": "pt"})
    return folder


def load_speechlm(folder: str | Path, padding_side: str = "left",
                  ) -> tuple[SpeechLMForCausalLM, PreTrainedTokenizerBase]:
    """Rebuild a model saved by `save_speechlm` or `export_merged` (float32, CPU, eval mode),
    and its tokenizer with the given padding side."""
    folder = Path(folder)
    if not (folder / "config.json").is_file() or not (folder / AUDIO_WEIGHTS).is_file():
        raise FileNotFoundError(f"{folder} is not a saved SpeechLM (config.json and {AUDIO_WEIGHTS} needed)")
    config = SpeechLMConfig.from_pretrained(folder)
    tokenizer = _load_tokenizer(folder, padding_side)
    if config.merged:
        lm = _load_lm(folder / MERGED_LM_DIR)
    else:
        lm = _load_lm(resolve_model(config.lm_name_or_path))
        _fit_embeddings(lm, config.text_config.vocab_size, config.audio_token_id)
    _check_same_lm(lm.config, config.text_config, config.lm_name_or_path)
    lm.config.name_or_path = config.lm_name_or_path
    config.text_config = lm.config

    with safe_open(str(folder / AUDIO_WEIGHTS), framework="pt") as f:
        if (f.metadata() or {}).get("format") != AUDIO_FORMAT:
            raise ValueError(f"{folder / AUDIO_WEIGHTS} is not a SpeechLM audio file")
        audio_state = {k: f.get_tensor(k) for k in f.keys()}
    pretrained_encoder = None
    if not any(k.startswith("audio_encoder.") and "lora_" not in k for k in audio_state):
        if not config.is_whisper:
            raise ValueError(f"{folder / AUDIO_WEIGHTS} lacks the encoder weights")
        pretrained_encoder = _load_whisper(config.whisper_source)[0]
    model = SpeechLMForCausalLM(config, lm=lm, audio_encoder=pretrained_encoder)
    result = model.model.load_state_dict(audio_state, strict=False)
    expected = ("projector.", "prosody_projector.", "evidence.", "level_evidence.") + (() if pretrained_encoder is not None else ("audio_encoder.",))
    missing = [k for k in result.missing_keys if k.startswith(expected)
               or (k.startswith("audio_encoder.") and "lora_" in k)]
    if missing or result.unexpected_keys:
        raise ValueError(f"{folder / AUDIO_WEIGHTS} does not fit the model: missing {missing[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")
    if not config.merged and config.use_lora:
        _load_adapter(model, folder)
    model.generation_config = GenerationConfig.from_pretrained(folder)
    return model.eval(), tokenizer


def _check_same_lm(found, saved, name: str) -> None:
    keys = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")
    diff = {k: (getattr(saved, k, None), getattr(found, k, None)) for k in keys
            if getattr(saved, k, None) != getattr(found, k, None)}
    if diff:
        raise ValueError(f"the LM {name!r} no longer matches the saved model (saved, found): {diff}")


def _load_adapter(model: SpeechLMForCausalLM, folder: Path) -> None:
    from peft import LoraConfig
    from peft.functional import set_peft_model_state_dict
    from safetensors.torch import load_file

    if not (folder / ADAPTER_WEIGHTS).is_file():
        raise FileNotFoundError(f"{folder} is configured with LoRA but has no {ADAPTER_WEIGHTS}")
    model.add_lora(LoraConfig.from_pretrained(str(folder)))
    result = set_peft_model_state_dict(model.model.language_model, load_file(str(folder / ADAPTER_WEIGHTS)))
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        raise ValueError(f"{folder / ADAPTER_WEIGHTS} does not fit the model: missing {missing[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")


def export_merged(folder: str | Path, out: str | Path) -> Path:
    """Merge the LoRA adapter of the model in `folder` into its LM and save a self-contained
    serving folder at `out` that `load_speechlm` loads without an adapter."""
    model, tokenizer = load_speechlm(folder)
    model.merge_lora()
    return save_speechlm(model, tokenizer, out)


def write_task(folder: Path, fmt: str, transcript_source: str, labels: list[str],
               asr: str, levels: Path | str, inputs: str = "audio",
               prosody_caption: bool = False, speech_embedding: str = "none") -> None:
    """What prediction needs besides the weights: the task (`inputs`: `audio`, soft audio
    tokens, or `text`, transcript and prosody caption only; `prosody_caption`: an audio model
    also reads the caption in its SER prompt; `speech_embedding`: the clip embedding its
    features had) and the training corpus's level cut points, against which a new clip's cues
    are described."""
    task = {"format": fmt, "transcript_source": transcript_source, "labels": labels, "asr": asr,
            "inputs": inputs, "prosody_caption": prosody_caption}
    if speech_embedding != "none":
        task["speech_embedding"] = speech_embedding
    (folder / TASK_FILE).write_text(json.dumps(task, indent=2) + "\n")
    shutil.copyfile(levels, folder / LEVELS_FILE)


def set_label_temperature(folder: Path | str, temperature: float | None) -> None:
    """Write the label temperature fitted for the model in `folder` into its task.json
    (`components.speechlm.calibration`); None removes it (the LM's own probabilities)."""
    path = Path(folder) / TASK_FILE
    task = json.loads(path.read_text())
    task.pop("label_temperature", None)
    if temperature is not None:
        task["label_temperature"] = round(float(temperature), 6)
    path.write_text(json.dumps(task, indent=2) + "\n")
