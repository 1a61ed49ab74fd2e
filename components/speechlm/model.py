"""The SpeechLM: audio encoder -> projector -> soft tokens spliced into a causal LM (LoRA on the LM).

The soft tokens are written into the prompt *inside the backbone* (`SpeechLMModel`), as
transformers' vision-language models do. TRL's trainers compute log-probs with a fused LM head
that calls `model.base_model(**inputs)` and projects `last_hidden_state` itself, bypassing the
top-level forward; splicing in the backbone is what makes the audio count there too.

LoRA is injected in place into the inner language model with `peft.inject_adapter_in_model`
(PEFT's integration API) rather than wrapping it in a `PeftModel`, so the outer class stays a
plain `PreTrainedModel` that TRL can patch, and the module tree keeps the LM's own layout.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    GenerationMixin,
    PreTrainedModel,
)
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
)
from transformers.modeling_utils import slice_logits_to_keep

from components.speechlm.config import SpeechLMConfig
from components.speechlm.encoders import (
    AudioProjector,
    build_audio_encoder,
    check_audio_mask,
    n_audio_tokens,
    stack_size,
)
from components.speechlm.evidence import EvidenceToken, off_the_random_stream

IGNORE = -100
"""Label of a position the loss skips (prompt, padding, unmeasured perception targets): the
default `ignore_index` of torch's cross-entropy and of transformers' and TRL's losses."""

WHISPER_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
"""The attention projections of a Whisper encoder layer that `encoder_lora_r` adapts."""


class AudioPlaceholderMismatch(ValueError):
    """The prompt holds a different number of audio placeholders than the clip has soft tokens."""


class SpeechLMPreTrainedModel(PreTrainedModel):
    config: SpeechLMConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True


def build_prosody_projector(config: SpeechLMConfig) -> nn.Module | None:
    """The MLP that turns a clip's prosody vector into one soft token (None without one)."""
    if not config.prosody_dim:
        return None
    hidden = config.text_config.hidden_size
    return nn.Sequential(
        nn.Linear(config.prosody_dim, config.projector_hidden or hidden), nn.GELU(),
        nn.Linear(config.projector_hidden or hidden, hidden), nn.Dropout(config.audio_dropout),
    )


def build_evidence_token(config: SpeechLMConfig, encoder_dim: int) -> EvidenceToken | None:
    """The evidence token's classifiers over the clip embedding (None without one)."""
    if not config.evidence_classes:
        return None
    hidden = config.text_config.hidden_size
    return off_the_random_stream(lambda: EvidenceToken(
        encoder_dim + (hidden if config.prosody_dim else 0), config.prosody_dim,
        config.evidence_classes, hidden, power=config.evidence_power))


def build_level_evidence(config: SpeechLMConfig, encoder_dim: int) -> nn.ModuleDict | None:
    """One evidence token per perception task, over its level words (None without them)."""
    if not config.level_evidence:
        return None
    hidden = config.text_config.hidden_size
    return off_the_random_stream(lambda: nn.ModuleDict({
        task: EvidenceToken(encoder_dim + (hidden if config.prosody_dim else 0),
                            config.prosody_dim, n_levels, hidden)
        for task, n_levels in config.level_evidence.items()}))


class SpeechLMModel(SpeechLMPreTrainedModel):
    """The backbone: audio encoder, projector and the LM's base model (no LM head)."""

    def __init__(self, config: SpeechLMConfig, language_model: PreTrainedModel | None = None,
                 audio_encoder: nn.Module | None = None):
        super().__init__(config)
        self.audio_encoder = build_audio_encoder(config, audio_encoder)
        self.projector = AudioProjector(
            self.audio_encoder.output_dim, config.text_config.hidden_size, stack_size(config),
            hidden=config.projector_hidden, dropout=config.audio_dropout,
        )
        self.prosody_projector = build_prosody_projector(config)
        self.evidence = build_evidence_token(config, self.audio_encoder.output_dim)
        self.level_evidence = build_level_evidence(config, self.audio_encoder.output_dim)
        if language_model is None:
            language_model = AutoModel.from_config(config.text_config)
        self.language_model = language_model
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def encode_audio(self, audio_values: torch.Tensor, audio_mask: torch.Tensor | None = None,
                     prosody_values: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Soft tokens [B, N, hidden] and their validity mask [B, N] (valid tokens first): the
        evidence token when the model has one, the level evidence tokens (one per perception
        task) when it has them, the prosody vector's token when it has a prosody projector, then
        the clip's frames."""
        if audio_mask is None:
            n = audio_values.shape[1] if not self.config.is_whisper else audio_values.shape[-1]
            audio_mask = torch.ones(audio_values.shape[0], n, dtype=torch.bool, device=audio_values.device)
        audio_mask = audio_mask.to(device=audio_values.device, dtype=torch.bool)
        check_audio_mask(audio_mask)
        dtype = next(self.audio_encoder.parameters()).dtype
        frames, frame_mask = self.audio_encoder(audio_values.to(dtype), audio_mask)
        soft, soft_mask = self.projector(frames, frame_mask)
        prosody_token = None
        if self.prosody_projector is not None:
            if prosody_values is None or prosody_values.shape != (soft.shape[0], self.config.prosody_dim):
                got = None if prosody_values is None else tuple(prosody_values.shape)
                raise ValueError(f"this model needs prosody_values [{soft.shape[0]}, {self.config.prosody_dim}] "
                                 f"(speaker-normalised eGeMAPS), got {got}")
            prosody_values = prosody_values.to(device=soft.device, dtype=soft.dtype)
            prosody_token = self.prosody_projector(prosody_values)
        tokens = [] if self.evidence is None else [self.evidence]
        tokens += [] if self.level_evidence is None else list(self.level_evidence.values())
        first = [token(frames, frame_mask, prosody_token, prosody_values).to(soft.dtype)
                 for token in tokens] + ([] if prosody_token is None else [prosody_token])
        if not first:
            return soft, soft_mask
        return (torch.cat([torch.stack(first, 1), soft], 1),
                torch.cat([soft_mask.new_ones(soft.shape[0], len(first)), soft_mask], 1))

    def splice_audio(self, input_ids: torch.LongTensor, inputs_embeds: torch.Tensor,
                     audio_values: torch.Tensor, audio_mask: torch.Tensor | None,
                     prosody_values: torch.Tensor | None = None) -> torch.Tensor:
        """Write each sample's valid soft tokens, in order, over its audio placeholders."""
        soft, soft_mask = self.encode_audio(audio_values, audio_mask, prosody_values)
        placeholders = input_ids == self.config.audio_token_id
        if placeholders.shape[0] != soft.shape[0]:
            raise ValueError(f"{placeholders.shape[0]} prompts but {soft.shape[0]} clips in audio_values")
        n_slots, n_soft = placeholders.sum(1), soft_mask.sum(1)
        if not torch.equal(n_slots.cpu(), n_soft.cpu()):
            bad = [(i, int(a), int(b)) for i, (a, b) in enumerate(zip(n_slots.tolist(), n_soft.tolist())) if a != b]
            detail = "; ".join(f"sample {i}: {a} placeholders, {b} soft tokens" for i, a, b in bad[:4])
            raise AudioPlaceholderMismatch(
                f"audio placeholders ({self.config.audio_token!r}) do not match the soft audio tokens: {detail}. "
                "Insert model.n_audio_tokens(n_frames) placeholders per clip."
            )
        source = soft[soft_mask].to(device=inputs_embeds.device, dtype=inputs_embeds.dtype)
        return inputs_embeds.masked_scatter(placeholders.unsqueeze(-1), source)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        audio_values: torch.Tensor | None = None,
        audio_mask: torch.Tensor | None = None,
        prosody_values: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        if audio_values is not None:
            if input_ids is None:
                raise ValueError("audio_values need input_ids: the audio placeholders are found by token id")
            inputs_embeds = self.splice_audio(input_ids, inputs_embeds, audio_values, audio_mask,
                                              prosody_values)
        elif input_ids is not None and _is_prefill(past_key_values) \
                and (input_ids == self.config.audio_token_id).any():
            raise AudioPlaceholderMismatch("the prompt holds audio placeholders but no audio_values were given")
        return self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )


def _is_prefill(past_key_values) -> bool:
    return past_key_values is None or past_key_values.get_seq_length() == 0


class SpeechLMForCausalLM(SpeechLMPreTrainedModel, GenerationMixin):
    """Backbone + the LM's head; `generate` encodes the audio once, on the prefill step."""

    def __init__(self, config: SpeechLMConfig, lm: PreTrainedModel | None = None,
                 audio_encoder: nn.Module | None = None):
        """`lm`: a loaded causal LM whose base model and head are reused (built from
        `config.text_config` when None); `audio_encoder`: a loaded pretrained encoder."""
        super().__init__(config)
        if lm is None:
            lm = AutoModelForCausalLM.from_config(config.text_config)
        self.model = SpeechLMModel(config, lm.get_decoder(), audio_encoder)
        self.lm_head = lm.get_output_embeddings()
        # Tie as the LM does, with its base model's prefix mapped to where it lives here.
        tied = [source for target, source in (lm._tied_weights_keys or {}).items() if target.endswith("weight")]
        self._tied_weights_keys = {
            "lm_head.weight": "model.language_model." + tied[0].removeprefix(f"{lm.base_model_prefix}.")
        } if tied else {}
        self.post_init()
        if config.encoder_lora_r and not config.merged:
            self._add_encoder_lora()
        self.set_trainable()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def n_audio_tokens(self, n_frames: int) -> int:
        """Placeholders to insert for a clip with `n_frames` encoder input frames."""
        return n_audio_tokens(self.config, n_frames)

    def featurize(self, audio16k) -> tuple[torch.Tensor, torch.Tensor]:
        """(audio_values, audio_mask) of raw 16 kHz mono clips for the configured encoder."""
        return self.model.audio_encoder.featurize(audio16k)

    def add_lora(self, lora_config=None) -> None:
        """Inject a LoRA adapter into the language model: `lora_config` (a peft LoraConfig, e.g.
        a saved one) or a fresh one from the config's lora_* settings."""
        from peft import LoraConfig
        from peft.functional import inject_adapter_in_model

        if self.has_lora:
            raise ValueError("the language model already holds a LoRA adapter")
        c = self.config
        if lora_config is None:
            lora_config = LoraConfig(r=c.lora_r, lora_alpha=c.lora_alpha, lora_dropout=c.lora_dropout,
                                     target_modules=list(c.lora_target_modules), bias="none",
                                     base_model_name_or_path=c.lm_name_or_path)
        inject_adapter_in_model(lora_config, self.model.language_model)
        self.set_trainable()

    def _add_encoder_lora(self) -> None:
        """LoRA on the pretrained encoder's attention projections (`config.encoder_lora_r`)."""
        from peft import LoraConfig
        from peft.functional import inject_adapter_in_model

        c = self.config
        inject_adapter_in_model(LoraConfig(r=c.encoder_lora_r, lora_alpha=2 * c.encoder_lora_r,
                                           lora_dropout=c.lora_dropout, bias="none",
                                           target_modules=list(WHISPER_LORA_TARGETS)),
                                self.model.audio_encoder.encoder)

    def merge_lora(self) -> None:
        """Fold the LoRA weights into the linear layers of the LM (and of an adapted encoder)
        and drop the adapters (for serving)."""
        from peft.tuners.lora import LoraLayer

        for owner in (self.model.language_model, self.model.audio_encoder):
            for name, module in list(owner.named_modules()):
                if isinstance(module, LoraLayer):
                    module.merge()
                    parent, _, child = name.rpartition(".")
                    setattr(owner.get_submodule(parent), child, module.get_base_layer())
            for module in owner.modules():  # PEFT marks the module it injected into
                if hasattr(module, "peft_config"):
                    del module.peft_config
        self.config.merged = True
        self.set_trainable()

    @property
    def peft_config(self) -> dict:
        """The LM's LoRA configs by adapter name ({} without LoRA), as a PeftModel exposes
        them: TRL's GRPOTrainer reads it to choose its KL reference."""
        return getattr(self.model.language_model, "peft_config", {})

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """The model without its LoRA adapters while inside (PeftModel's API, which TRL calls
        for the reference log-probs): with the SFT adapter merged into the weights and a
        fresh RL adapter on top, that is the SFT model."""
        from peft.tuners.lora import LoraLayer

        layers = [m for m in self.modules() if isinstance(m, LoraLayer)]
        for layer in layers:
            layer.enable_adapters(False)
        try:
            yield
        finally:
            for layer in layers:
                layer.enable_adapters(True)

    @property
    def has_lora(self) -> bool:
        return any("lora_" in name for name, _ in self.model.language_model.named_parameters())

    def set_evidence_power(self, power: float) -> None:
        """Sharpen the evidence token (`SpeechLMConfig.evidence_power`), kept in the config so a
        saved model loads with it."""
        if self.model.evidence is None:
            raise ValueError("this model has no evidence token to sharpen")
        if not power > 0:
            raise ValueError(f"evidence power must be > 0, got {power}")
        self.config.evidence_power = float(power)
        self.model.evidence.power = float(power)

    def set_trainable(self) -> None:
        """Freeze the LM (LoRA weights excepted), the head and the evidence tokens' classifiers;
        train the projector, and the encoder unless it is a pretrained one that the config keeps
        frozen (LoRA weights excepted)."""
        for name, param in self.model.language_model.named_parameters():
            param.requires_grad_("lora_" in name)
        self.lm_head.requires_grad_(False)
        self.model.projector.requires_grad_(True)
        if self.model.prosody_projector is not None:
            self.model.prosody_projector.requires_grad_(True)
        for fixed in (self.model.evidence, self.model.level_evidence):
            if fixed is not None:  # fixed classifiers: the LM learns to read them
                fixed.requires_grad_(False)
        train_all = not self.config.is_whisper or self.config.train_pretrained_encoder
        for name, param in self.model.audio_encoder.named_parameters():
            param.requires_grad_(train_all or "lora_" in name)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        audio_values: torch.Tensor | None = None,
        audio_mask: torch.Tensor | None = None,
        prosody_values: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Logits, and the shifted next-token cross-entropy over labels != IGNORE when labels are given."""
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            audio_values=audio_values,
            audio_mask=audio_mask,
            prosody_values=prosody_values,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        logits = self.lm_head(slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep))
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, ignore_index=IGNORE,
                                      vocab_size=self.config.text_config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def prepare_inputs_for_generation(self, *args, audio_values=None, audio_mask=None,
                                      prosody_values=None,
                                      is_first_iteration: bool | None = False, **kwargs):
        """Pass the audio on the prefill step only: later steps read it from the KV cache."""
        model_inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if is_first_iteration or not kwargs.get("use_cache", True):
            model_inputs["audio_values"] = audio_values
            model_inputs["audio_mask"] = audio_mask
            model_inputs["prosody_values"] = prosody_values
        return model_inputs
