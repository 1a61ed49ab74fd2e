"""The SpeechLM configuration: which LM, which audio encoder, how audio becomes soft tokens, LoRA.

A transformers config (a `text_config` sub-config like LLaVA's) so transformers and TRL find the
LM's settings through `get_text_config()`, and the whole model is described by one config.json.
"""
from __future__ import annotations

from typing import ClassVar

from huggingface_hub.dataclasses import strict
from transformers import PretrainedConfig
from transformers.configuration_utils import SubConfigSpec
from transformers.models.auto.configuration_auto import AutoConfig

FRAMES_ENCODER = "frames"
WHISPER_PREFIX = "whisper:"
DEFAULT_LM = "bundled:smollm2-135m-instruct"
DEFAULT_AUDIO_TOKEN = "<|audio|>"


@strict
class SpeechLMConfig(PretrainedConfig):
    r"""
    lm_name_or_path: the LM as configured (`bundled:<name>`, a hub id or a folder); saved as given
        and resolved with `components.models.bundled.resolve_model` when the model is rebuilt.
    encoder: `frames` (compact encoder over the [T, 83] frame features, trained from scratch) or
        `whisper:<model id or folder>` (a pretrained Whisper encoder).
    audio_token / audio_token_id: the prompt placeholder, repeated once per soft audio token.
    tokens_per_second: target soft-token rate; adjacent encoder frames are stacked
        `round(encoder rate / tokens_per_second)` at a time, so the real rate is close to it.
    audio_dropout: dropout on the soft audio tokens (it kept the LM from copying the encoder).
    frame_norm: how the frames encoder normalises its input: `layer` (one LayerNorm over the
        83 features of each frame) or `feature` (each feature standardised with the training
        frames' mean and deviation, kept as buffers: no feature dominates the others).
    spec_augment: SpecAugment on the frame features while training (`spec_time_masks` masks of
        up to `spec_time_width` of a clip's frames, `spec_feature_masks` masks of up to
        `spec_feature_width` features, set to the normalised mean); off at inference.
    prosody_dim: length of the utterance-level prosody vector (speaker-normalised eGeMAPS
        functionals: 88) that becomes one more soft token before the clip's frames; 0: none.
        Prosody levels are relative to the speaker, which a single clip's frames cannot tell.
    evidence_classes: number of emotion labels of the evidence token (one more soft token before
        the others: the encoder head's and, with a prosody token, the eGeMAPS logistic
        regression's mean probabilities over the label words' embeddings, see
        `components.speechlm.evidence`); 0: none.
    evidence_power: the evidence token's probabilities are raised to this power and
        renormalised before they weight the label words (1: as the classifiers give them;
        larger: sharper, nearer the ensemble's argmax). Trained at 1 and chosen after SFT on
        dev (`sft.evidence_power_grid`).
    level_evidence: perception task -> number of its levels (pitch: 3, ..., intonation: 6):
        one more soft token per task after the evidence token, built the same way over the
        level words (the warm-up's level head and an eGeMAPS logistic regression); None: none.
    train_pretrained_encoder: fine-tune a pretrained (Whisper) encoder instead of freezing it.
    encoder_lora_r: LoRA rank on a pretrained (Whisper) encoder's attention projections (alpha
        2r, dropout lora_dropout): the encoder is adapted, its own weights stay frozen; 0: none.
    whisper_config / whisper_feature_extractor: the Whisper encoder's config and feature
        extractor as dicts, filled in when the model is built, so it can be rebuilt from a folder.
    use_lora, lora_*: the LoRA adapter on the LM's attention projections.
    merged: the LoRA adapter is merged into the LM weights saved beside this config.
    """

    model_type = "emoreason_speechlm"
    sub_configs_defaults: ClassVar[dict[str, SubConfigSpec]] = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
    }

    text_config: dict | PretrainedConfig | None = None
    lm_name_or_path: str = DEFAULT_LM
    encoder: str = FRAMES_ENCODER
    audio_token: str = DEFAULT_AUDIO_TOKEN
    audio_token_id: int | None = None
    frame_dim: int = 83
    encoder_dim: int = 192
    encoder_heads: int = 4
    encoder_layers: int = 2
    encoder_dropout: float = 0.1
    tokens_per_second: float = 8.0
    projector_hidden: int | None = None
    audio_dropout: float = 0.1
    frame_norm: str = "layer"
    spec_augment: bool = False
    spec_time_masks: int = 2
    spec_time_width: float = 0.1
    spec_feature_masks: int = 2
    spec_feature_width: int = 8
    prosody_dim: int = 0
    evidence_classes: int = 0
    evidence_power: float = 1.0
    level_evidence: dict | None = None
    train_pretrained_encoder: bool = False
    encoder_lora_r: int = 0
    whisper_config: dict | None = None
    whisper_feature_extractor: dict | None = None
    use_lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    merged: bool = False
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # Tying is declared by the LM; the composite model follows it (as LLaVA's config does).
        self.tie_word_embeddings = bool(getattr(self.text_config, "tie_word_embeddings", False))
        self.lora_target_modules = list(self.lora_target_modules)

    def validate_speechlm(self) -> None:
        """Raise a clear error for settings the model cannot be built with (run on every init)."""
        if self.encoder != FRAMES_ENCODER and not self.encoder.startswith(WHISPER_PREFIX):
            raise ValueError(f"unknown encoder {self.encoder!r}: use 'frames' or 'whisper:<model id or folder>'")
        if self.encoder.startswith(WHISPER_PREFIX) and not self.encoder[len(WHISPER_PREFIX):]:
            raise ValueError("encoder 'whisper:' needs a model id or folder after the colon")
        if self.tokens_per_second <= 0:
            raise ValueError(f"tokens_per_second must be positive, got {self.tokens_per_second}")
        if self.encoder_lora_r < 0:
            raise ValueError(f"encoder_lora_r must be >= 0, got {self.encoder_lora_r}")
        if self.encoder_lora_r and not self.is_whisper:
            raise ValueError("encoder_lora_r adapts a pretrained (whisper:) encoder; the frames "
                             "encoder is trained fully")
        if self.encoder_lora_r and self.train_pretrained_encoder:
            raise ValueError("choose encoder_lora_r or train_pretrained_encoder, not both")
        if self.frame_norm not in ("layer", "feature"):
            raise ValueError(f"frame_norm must be 'layer' or 'feature', got {self.frame_norm!r}")
        if not 0.0 <= self.spec_time_width < 1.0:
            raise ValueError(f"spec_time_width must be in [0, 1), got {self.spec_time_width}")
        if min(self.spec_time_masks, self.spec_feature_masks, self.spec_feature_width) < 0:
            raise ValueError("spec_time_masks, spec_feature_masks and spec_feature_width must be >= 0")
        if self.prosody_dim < 0:
            raise ValueError(f"prosody_dim must be >= 0, got {self.prosody_dim}")
        if self.evidence_classes < 0:
            raise ValueError(f"evidence_classes must be >= 0, got {self.evidence_classes}")
        if not self.evidence_power > 0:
            raise ValueError(f"evidence_power must be > 0, got {self.evidence_power}")
        if any(not isinstance(n, int) or n < 2 for n in (self.level_evidence or {}).values()):
            raise ValueError(f"level_evidence needs at least 2 levels per task, got {self.level_evidence}")
        if self.encoder_dim % self.encoder_heads:
            raise ValueError(f"encoder_dim {self.encoder_dim} is not divisible by encoder_heads {self.encoder_heads}")
        for name in ("encoder_dropout", "audio_dropout", "lora_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def is_whisper(self) -> bool:
        return self.encoder.startswith(WHISPER_PREFIX)

    @property
    def whisper_source(self) -> str:
        """The Whisper model id or folder named by `encoder`."""
        return self.encoder[len(WHISPER_PREFIX):]


# Lets transformers' Auto classes (e.g. AutoTokenizer reading config.json) recognise the folder.
AutoConfig.register(SpeechLMConfig.model_type, SpeechLMConfig, exist_ok=True)
