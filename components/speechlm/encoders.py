"""Audio encoders and the projector that turns their frames into soft tokens for the LM.

Every encoder takes `(audio_values, audio_mask)` with the valid frames first in each row (right
padding) and returns `(frames [B, T', D], mask [B, T'])`; its `featurize` makes those inputs from
raw 16 kHz audio, so callers never care which encoder is configured. The number of soft tokens of
a clip depends only on its number of input frames (`n_audio_tokens`), so a prompt builder can
insert exactly that many placeholders before any audio is encoded.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from components.features.frames import FRAME_FEATURE_NAMES, frame_features
from components.features.prosody import HOP, SR
from components.speechlm.config import SpeechLMConfig

INPUT_FRAME_RATE = SR / HOP
"""Both encoders take 100 input frames per second (frame features and Whisper log-mel)."""


def check_audio_mask(mask: torch.Tensor) -> None:
    if (mask[:, 1:] & ~mask[:, :-1]).any():
        raise ValueError("audio_mask must mark the valid frames first in each row (right padding)")


def collate_frames(arrays: Sequence[np.ndarray | torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad [T_i, 83] frame features (e.g. read from feature shards) into
    (audio_values [B, T, 83] float32, audio_mask [B, T] bool)."""
    if not arrays:
        raise ValueError("no clips to collate")
    tensors = [torch.as_tensor(np.asarray(a), dtype=torch.float32) for a in arrays]
    for i, t in enumerate(tensors):
        if t.ndim != 2 or t.shape[1] != len(FRAME_FEATURE_NAMES):
            raise ValueError(f"clip {i}: frame features must be [T, {len(FRAME_FEATURE_NAMES)}], got {tuple(t.shape)}")
    lengths = torch.tensor([len(t) for t in tensors])
    values = nn.utils.rnn.pad_sequence(tensors, batch_first=True)
    mask = torch.arange(values.shape[1])[None, :] < lengths[:, None]
    return values, mask


def clip_vector(frames: torch.Tensor, mask: torch.Tensor,
                prosody_token: torch.Tensor | None = None) -> torch.Tensor:
    """[B, D (+ LM hidden size)]: the mean of each clip's valid encoder frames, and its prosody
    token when the model has one: what the emotion heads read."""
    weights = mask.to(frames.dtype)[..., None]
    pooled = (frames * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    return pooled if prosody_token is None else torch.cat([pooled, prosody_token], -1)


def _sinusoids(length: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Fixed sinusoidal positions, valid for any clip length."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)
    return table.to(dtype)


def spec_augment(x: torch.Tensor, mask: torch.Tensor, config: SpeechLMConfig) -> torch.Tensor:
    """SpecAugment (Park et al., 2019) on normalised frame features [B, T, F]: per clip, time
    masks of up to `spec_time_width` of its valid frames and feature masks of up to
    `spec_feature_width` features, set to 0 (the normalised mean). Written here because the
    torchaudio transforms mask one width for the whole batch and ignore each clip's length."""
    b, t, f = x.shape
    keep = torch.ones_like(x, dtype=torch.bool)
    lengths = mask.sum(1)
    steps = torch.arange(t, device=x.device)[None, :]
    for _ in range(config.spec_time_masks):
        width = (torch.rand(b, device=x.device) * (lengths * config.spec_time_width + 1)).long()
        start = (torch.rand(b, device=x.device) * (lengths - width + 1).clamp(min=1)).long()
        keep &= ~((steps >= start[:, None]) & (steps < (start + width)[:, None]))[..., None]
    bins = torch.arange(f, device=x.device)[None, :]
    for _ in range(config.spec_feature_masks):
        width = torch.randint(0, config.spec_feature_width + 1, (b,), device=x.device)
        start = (torch.rand(b, device=x.device) * (f - width + 1)).long()
        keep &= ~((bins >= start[:, None]) & (bins < (start + width)[:, None]))[:, None, :]
    return x * keep


class FeatureStandardizer(nn.Module):
    """Each input feature standardised with fixed statistics of the training frames
    (`fit`), saved with the model as buffers; before `fit` it passes the input through."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, arrays: Sequence[np.ndarray]) -> None:
        """Mean and deviation per feature over all frames of `arrays` ([T_i, dim] each)."""
        frames = torch.as_tensor(np.concatenate([np.asarray(a, dtype=np.float32) for a in arrays]))
        if frames.ndim != 2 or frames.shape[1] != len(self.mean) or not len(frames):
            raise ValueError(f"fit needs frames [T, {len(self.mean)}], got {tuple(frames.shape)}")
        self.mean.copy_(frames.mean(0))
        self.std.copy_(frames.std(0).clamp(min=1e-3))

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return (values - self.mean) / self.std


class FramesEncoder(nn.Module):
    """Compact encoder over the frame features, trained from scratch.

    Input normalisation (`frame_norm`), SpecAugment while training (`spec_augment`), two
    stride-2 convolutions (100 -> 25 frames/s) and a small pre-norm Transformer. Padded frames
    are zeroed after every layer that could leak them into valid frames, so a clip encodes the
    same alone as in a padded batch.
    """

    output_rate = INPUT_FRAME_RATE / 4

    def __init__(self, config: SpeechLMConfig):
        super().__init__()
        d = config.encoder_dim
        self.config = config
        self.input_norm = nn.LayerNorm(config.frame_dim) if config.frame_norm == "layer" \
            else FeatureStandardizer(config.frame_dim)
        self.conv1 = nn.Conv1d(config.frame_dim, d, kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        layer = nn.TransformerEncoderLayer(
            d, config.encoder_heads, dim_feedforward=4 * d, dropout=config.encoder_dropout,
            activation="gelu", batch_first=True, norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(layer, config.encoder_layers, enable_nested_tensor=False)
        self.output_norm = nn.LayerNorm(d)
        self.output_dim = d

    @staticmethod
    def output_frames(n_frames: int) -> int:
        """Encoder frames of a clip with `n_frames` input frames (each conv: ceil(n / 2))."""
        return math.ceil(math.ceil(n_frames / 2) / 2)

    @staticmethod
    def featurize(audio16k: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame features of raw 16 kHz mono clips, right-padded: ([B, T, 83], [B, T])."""
        return collate_frames([frame_features(a) for a in audio16k])

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.input_norm(values) * mask[..., None]
        if self.training and self.config.spec_augment:
            x = spec_augment(x, mask, self.config)
        for conv in (self.conv1, self.conv2):
            mask = mask[:, ::2]  # output frame j is centred on input frame 2j
            x = F.gelu(conv(x.transpose(1, 2)).transpose(1, 2)) * mask[..., None]
        x = x + _sinusoids(x.shape[1], x.shape[2], x.device, x.dtype)
        # A row without audio (a text-only sample) would attend to nothing and give NaN:
        # let every row see its first frame, which is valid whenever the row has any.
        key_padding = ~mask
        key_padding[:, 0] = False
        x = self.transformer(x, src_key_padding_mask=key_padding)
        return self.output_norm(x) * mask[..., None], mask


class WhisperAudioEncoder(nn.Module):
    """A Whisper encoder (transformers) over Whisper log-mel features of 30 s windows, 50 frames/s.

    Whisper was trained on zero-padded 30 s windows without an attention mask, so the padding is
    encoded as Whisper expects and only the output frames are masked.
    """

    output_rate = INPUT_FRAME_RATE / 2

    def __init__(self, config: SpeechLMConfig, encoder: nn.Module | None = None):
        super().__init__()
        from transformers import WhisperConfig, WhisperFeatureExtractor
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        if config.whisper_config is None or config.whisper_feature_extractor is None:
            raise ValueError("a whisper encoder needs config.whisper_config and whisper_feature_extractor "
                             "(build the model with build_speechlm)")
        if encoder is None:
            encoder = WhisperEncoder(WhisperConfig.from_dict(config.whisper_config))
        self.encoder = encoder
        self.feature_extractor = WhisperFeatureExtractor.from_dict(config.whisper_feature_extractor)
        self.output_dim = self.encoder.config.d_model

    @staticmethod
    def output_frames(n_frames: int) -> int:
        """Encoder frames of a clip with `n_frames` log-mel frames (Whisper's stride-2 conv)."""
        return math.ceil(n_frames / 2)

    def featurize(self, audio16k: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Whisper log-mel of raw 16 kHz mono clips: ([B, n_mels, 3000], [B, 3000] bool)."""
        fe = self.feature_extractor
        clips = [np.asarray(a, dtype=np.float32) for a in audio16k]
        for i, clip in enumerate(clips):
            if clip.ndim != 1:
                raise ValueError(f"clip {i}: audio must be 16 kHz mono (1-D), got shape {clip.shape}")
            if len(clip) > fe.n_samples:
                raise ValueError(f"clip {i} is {len(clip) / SR:.1f} s; the Whisper encoder hears at most "
                                 f"{fe.chunk_length} s: split it first")
        out = fe(clips, sampling_rate=SR, return_attention_mask=True, return_tensors="pt")
        return out["input_features"], out["attention_mask"].bool()

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(input_features=values).last_hidden_state
        mask = mask[:, ::2]
        return hidden * mask[..., None], mask


class AudioProjector(nn.Module):
    """Stack `stack` adjacent encoder frames, then a 2-layer MLP into the LM's embedding space."""

    def __init__(self, in_dim: int, out_dim: int, stack: int, hidden: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.stack = stack
        hidden = hidden or out_dim
        self.mlp = nn.Sequential(nn.Linear(in_dim * stack, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        self.dropout = nn.Dropout(dropout)

    def output_frames(self, n_frames: int) -> int:
        return math.ceil(n_frames / self.stack)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, d = frames.shape
        pad = -t % self.stack
        frames = F.pad(frames * mask[..., None], (0, 0, 0, pad))
        mask = F.pad(mask, (0, pad))
        stacked = frames.reshape(b, -1, self.stack * d)
        return self.dropout(self.mlp(stacked)), mask.reshape(b, -1, self.stack).any(-1)


AudioEncoder = FramesEncoder | WhisperAudioEncoder


def encoder_class(config: SpeechLMConfig) -> type[FramesEncoder | WhisperAudioEncoder]:
    return WhisperAudioEncoder if config.is_whisper else FramesEncoder


def stack_size(config: SpeechLMConfig) -> int:
    """Encoder frames per soft token: the nearest whole number to encoder rate / tokens_per_second."""
    return max(1, round(encoder_class(config).output_rate / config.tokens_per_second))


def n_audio_tokens(config: SpeechLMConfig, n_frames: int) -> int:
    """Soft tokens (= placeholders to put in the prompt) for a clip of `n_frames` input frames
    (rows of its frame features, or valid Whisper log-mel frames: 100 per second either way),
    the prosody and evidence tokens included."""
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    return math.ceil(encoder_class(config).output_frames(int(n_frames)) / stack_size(config)) \
        + (1 if config.prosody_dim else 0) + (1 if config.evidence_classes else 0) \
        + len(config.level_evidence or {})


def build_audio_encoder(config: SpeechLMConfig, pretrained: nn.Module | None = None) -> AudioEncoder:
    """The configured encoder; `pretrained` is a loaded Whisper encoder to wrap instead of a fresh one."""
    if config.is_whisper:
        return WhisperAudioEncoder(config, pretrained)
    if pretrained is not None:
        raise ValueError("the frames encoder is trained from scratch; there is no pretrained module to pass")
    return FramesEncoder(config)
