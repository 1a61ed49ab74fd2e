"""Supervised warm-up of the audio encoder before SFT: an emotion classifier over its frames.

An encoder trained from scratch only through the LM's loss learns slowly: its gradient is one
label token diluted among the rationale's tokens, and the LM first has to learn to read soft
tokens that carry nothing yet. A few epochs as a classifier (mean-pooled frames, with the
prosody token when the model has one -> linear head, the head then dropped) give soft tokens
that already separate the emotions, so SFT spends its steps on teaching the LM to read them.
With prosody enhancement on, more heads learn the measured perception levels (pitch, energy,
rate, intonation) at the same time, so the soft tokens carry them too. A frozen pretrained
(Whisper) encoder is left alone.
"""
from __future__ import annotations

import copy
import json
import random
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save
from torch import nn
from torch.nn import functional as F

from components.device import to_device
from components.features.frames import canonical_header
from components.speechlm.encoders import clip_vector
from components.speechlm.formats import PERCEPTION_TASKS
from components.speechlm.model import IGNORE

CLASSIFIER_FILE = "encoder_classifier.safetensors"
CLASSIFIER_FORMAT = "emoreason-encoder-classifier-v1"


def clip_embedding(backbone: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean of the encoder's valid output frames, and the prosody token when the model has
    one: [B, D (+ LM hidden size)]."""
    frames, frame_mask = backbone.audio_encoder(inputs["audio_values"], inputs["audio_mask"])
    projector = backbone.prosody_projector
    return clip_vector(frames, frame_mask,
                       None if projector is None else projector(inputs["prosody_values"]))


def _warmed_modules(backbone: nn.Module) -> list[nn.Module]:
    return [m for m in (backbone.audio_encoder, backbone.prosody_projector) if m is not None]


def freeze_warmed(model: nn.Module) -> None:
    """Stop training what the warm-up trained (encoder, prosody projector) from here on."""
    for module in _warmed_modules(model.model):
        module.requires_grad_(False)


def _device(backbone: nn.Module) -> torch.device:
    """Where the encoder is: the warm-up runs there (the device SFT trains on)."""
    return next(backbone.audio_encoder.parameters()).device


def _level_targets(levels: dict[str, dict[str, str]], utt_ids: list[str],
                   device: torch.device) -> dict[str, torch.Tensor]:
    """Per task, the index of each clip's measured level (IGNORE where it was not measured)."""
    out = {}
    for task, by_clip in levels.items():
        answers = PERCEPTION_TASKS[task][1]
        out[task] = torch.tensor([answers.index(by_clip[u]) if by_clip.get(u) in answers
                                  else IGNORE for u in utt_ids], device=device)
    return out


@torch.no_grad()
def _accuracy(backbone: nn.Module, heads: nn.ModuleDict, batches, clips: list[tuple[str, int]],
              levels: dict[str, dict[str, str]], batch_size: int) -> dict[str, float]:
    """Emotion accuracy and, per perception task, level accuracy over the measured clips."""
    for module in _warmed_modules(backbone):
        module.eval()
    device = _device(backbone)
    hits = {name: 0 for name in heads}
    counts = {name: 0 for name in heads}
    for start in range(0, len(clips), batch_size):
        chunk = clips[start:start + batch_size]
        inputs, _ = batches([u for u, _ in chunk])
        embedding = clip_embedding(backbone, to_device(inputs, device))
        targets = {"emotion": torch.tensor([y for _, y in chunk], device=device),
                   **_level_targets(levels, [u for u, _ in chunk], device)}
        for name, head in heads.items():
            valid = targets[name] != IGNORE
            hits[name] += int((head(embedding).argmax(-1) == targets[name])[valid].sum())
            counts[name] += int(valid.sum())
    return {name: hits[name] / counts[name] for name in heads if counts[name]}


def pretrain_encoder(model, batches: Callable, train: list[tuple[str, str]],
                     dev: list[tuple[str, str]], label_set: list[str], epochs: int,
                     learning_rate: float, batch_size: int = 16, seed: int = 0,
                     levels: dict[str, dict[str, str]] | None = None,
                     log: Callable[[dict, int], None] | None = None,
                     classifier_out: Path | None = None, keep_best: bool = False) -> dict:
    """Train `model`'s audio encoder (and prosody projector) as a classifier of (utt_id, label)
    clips.

    `batches(utt_ids)` gives (model inputs, frames per clip), e.g. `AudioSource.batch`; the
    warm-up runs on the encoder's device.
    `levels`: perception task -> {utt_id: measured level}, learned by heads of their own.
    Returns the last epoch's loss and the train and dev accuracy (emotion, and per level
    task); `log(metrics, epoch)` is called after every epoch (MLflow, progress).
    `classifier_out`: a folder to keep the warmed-up encoder with its emotion head in
    (`CLASSIFIER_FILE`), the `encoder` baseline of evaluation.
    With an evidence token the emotion head is copied into it, and with level evidence tokens
    each level head into its task's (a frozen pretrained encoder then still trains the heads
    and the prosody projector).
    `keep_best`: end with the epoch of the best dev emotion accuracy (the earliest of equals)
    instead of the last; its metrics are returned, with `pretrain_best_epoch`.
    """
    backbone = model.model
    modules = _warmed_modules(backbone)
    trainable = any(p.requires_grad for p in backbone.audio_encoder.parameters())
    if epochs <= 0 or (not trainable and backbone.evidence is None
                        and backbone.level_evidence is None):
        return {}
    if missing := sorted(set(backbone.level_evidence or {}) - set(levels or {})):
        raise ValueError(f"the level evidence tokens of {missing} need their measured levels "
                         "to warm up their heads (pass levels)")
    if not train:
        raise ValueError("encoder pretraining needs labelled train clips")
    index = {label: i for i, label in enumerate(label_set)}
    unknown = sorted({label for _, label in train + dev} - set(index))
    if unknown:
        raise ValueError(f"labels {unknown} are not in the label set {label_set}")
    train_ids = [(u, index[label]) for u, label in train]
    dev_ids = [(u, index[label]) for u, label in dev]
    rng = random.Random(seed)
    width = backbone.audio_encoder.output_dim + (
        backbone.config.text_config.hidden_size if backbone.prosody_projector is not None else 0)
    levels = levels or {}
    device = _device(backbone)
    heads = nn.ModuleDict({"emotion": nn.Linear(width, len(label_set)), **{
        task: nn.Linear(width, len(PERCEPTION_TASKS[task][1])) for task in levels}}).to(device)
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params + list(heads.parameters()), lr=learning_rate,
                                  weight_decay=0.01)
    result: dict = {}
    best: tuple[float, dict, list[dict]] | None = None
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        for module in modules:
            module.train()
        order = train_ids[:]
        rng.shuffle(order)
        losses = []
        for first in range(0, len(order), batch_size):
            chunk = order[first:first + batch_size]
            inputs, _ = batches([u for u, _ in chunk])
            embedding = clip_embedding(backbone, to_device(inputs, device))
            loss = F.cross_entropy(heads["emotion"](embedding),
                                   torch.tensor([y for _, y in chunk], device=device),
                                   label_smoothing=0.1)
            for task, target in _level_targets(levels, [u for u, _ in chunk], device).items():
                if (target != IGNORE).any():
                    loss = loss + F.cross_entropy(heads[task](embedding), target,
                                                  ignore_index=IGNORE) / len(levels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        result = {"pretrain_loss": sum(losses) / len(losses)}
        for split, clips in (("train", train_ids), ("dev", dev_ids)):
            if clips:
                for name, value in _accuracy(backbone, heads, batches, clips, levels,
                                             batch_size).items():
                    key = "accuracy" if name == "emotion" else f"{name}_accuracy"
                    result[f"pretrain_{split}_{key}"] = value
        if log is not None:
            log(result, epoch)
        if keep_best and dev_ids and (best is None or result["pretrain_dev_accuracy"] > best[0]):
            best = (result["pretrain_dev_accuracy"], {**result, "pretrain_best_epoch": epoch},
                    [copy.deepcopy(m.state_dict()) for m in [*modules, heads]])
        print(f"encoder pretraining epoch {epoch}/{epochs}: loss {result['pretrain_loss']:.3f}, "
              f"train accuracy {result['pretrain_train_accuracy']:.3f}"
              + (f", dev accuracy {result['pretrain_dev_accuracy']:.3f}" if dev_ids else "")
              + f" ({time.perf_counter() - start:.0f} s)", flush=True)
    if best is not None:
        result = best[1]
        for module, state in zip([*modules, heads], best[2]):
            module.load_state_dict(state)
        print(f"encoder pretraining: kept epoch {result['pretrain_best_epoch']} (dev accuracy "
              f"{best[0]:.3f})", flush=True)
    if backbone.evidence is not None:  # the emotion head reads on, frozen, in the evidence token
        backbone.evidence.head.load_state_dict(heads["emotion"].state_dict())
    for task, token in (backbone.level_evidence or {}).items():  # and each level head in its own
        token.head.load_state_dict(heads[task].state_dict())
    if classifier_out is not None:
        save_classifier(Path(classifier_out), backbone, heads["emotion"], label_set)
    for module in modules:
        module.train()
    return result


def save_classifier(folder: Path, backbone: nn.Module, head: nn.Linear,
                    label_set: list[str]) -> Path:
    """The encoder (and prosody projector) as warmed up, with its emotion head: SFT goes on
    training the encoder for the LM, so this snapshot is what the encoder alone knew."""
    folder.mkdir(parents=True, exist_ok=True)
    modules = {"audio_encoder": backbone.audio_encoder, "head": head}
    if backbone.prosody_projector is not None:
        modules["prosody_projector"] = backbone.prosody_projector
    tensors = {f"{prefix}.{k}": v.detach().contiguous().clone()
               for prefix, module in modules.items() for k, v in module.state_dict().items()}
    data = save(tensors, metadata={"format": CLASSIFIER_FORMAT, "labels": json.dumps(list(label_set))})
    (folder / CLASSIFIER_FILE).write_bytes(canonical_header(data))  # same weights, same bytes
    return folder / CLASSIFIER_FILE


class EncoderClassifier(nn.Module):
    """The warmed-up encoder and its emotion head, rebuilt from a model folder."""

    def __init__(self, config, labels: list[str]):
        super().__init__()
        from components.speechlm.encoders import build_audio_encoder
        from components.speechlm.model import build_prosody_projector

        self.config, self.labels = config, list(labels)
        self.audio_encoder = build_audio_encoder(config)
        self.prosody_projector = build_prosody_projector(config)
        width = self.audio_encoder.output_dim + (
            config.text_config.hidden_size if self.prosody_projector is not None else 0)
        self.head = nn.Linear(width, len(self.labels))

    @classmethod
    def load(cls, folder: Path) -> EncoderClassifier:
        from components.speechlm.config import SpeechLMConfig

        path = Path(folder) / CLASSIFIER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: the model was trained without an "
                                    "encoder warm-up (sft.encoder_pretrain_epochs: 0)")
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != CLASSIFIER_FORMAT:
                raise ValueError(f"{path} is not an encoder classifier file")
            state = {k: f.get_tensor(k) for k in f.keys()}
        model = cls(SpeechLMConfig.from_pretrained(folder), json.loads(meta["labels"]))
        model.load_state_dict(state)
        return model.eval()

    @torch.no_grad()
    def predict_proba(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, labels] probabilities, on the classifier's device, for a batch of model inputs
        (`audio_values`, `audio_mask`, `prosody_values` when the model has a prosody token;
        moved there)."""
        return self.head(clip_embedding(self, to_device(inputs, _device(self)))).softmax(-1)
