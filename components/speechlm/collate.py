"""Batches of audio + text for the SpeechLM: prompt with one placeholder per soft audio token,
target tokens after it, and labels masked to the target only."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch

from components.audio_io import read_audio
from components.distill.verify import acoustic_claims
from components.features.frames import load_frames
from components.paths import resolve_audio_path
from components.speechlm.encoders import INPUT_FRAME_RATE, collate_frames, n_audio_tokens
from components.speechlm.formats import answer_span, label_continuations, split_label_tokens
from components.speechlm.model import IGNORE
from components.speechlm.prosody_vector import population_vectors, training_vectors
from components.speechlm.sft_data import POPULATION_NORM, SPEAKER_NORM, example_prompt


class AudioSource:
    """The audio inputs of a clip: frame features from the shards (frames encoder) or the
    waveform featurized by the encoder itself (Whisper), and its prosody vector when the model
    has a prosody token: speaker-normalised (`prosody`) or, for examples marked so,
    population-normalised (`population_prosody`)."""

    def __init__(self, model, frames: dict[str, np.ndarray] | None = None,
                 audio_paths: dict[str, Path] | None = None,
                 prosody: dict[str, np.ndarray] | None = None,
                 population_prosody: dict[str, np.ndarray] | None = None):
        self.model, self.frames, self.audio_paths = model, frames, audio_paths or {}
        if model.config.prosody_dim and prosody is None:
            raise ValueError("the model has a prosody token: give the clips' prosody vectors")
        self.prosody = prosody if model.config.prosody_dim else None
        self.population_prosody = population_prosody if model.config.prosody_dim else None

    @classmethod
    def from_features(cls, model, frames_dir: Path | str, manifest: pd.DataFrame,
                      data_root: Path | str, utt_ids: set[str],
                      features: pd.DataFrame | None = None,
                      stats: dict | None = None) -> AudioSource:
        """`features`: the features table, read for the prosody vectors when the model has a
        prosody token; `stats`: the training population's eGeMAPS statistics, for the
        population-normalised vectors."""
        prosody = population = None
        if model.config.prosody_dim:
            if features is None:
                raise ValueError("the model has a prosody token: pass the features table")
            prosody = training_vectors(features, utt_ids)
            population = None if stats is None else population_vectors(features, utt_ids, stats)
        if model.config.encoder == "frames":
            return cls(model, frames=load_frames(frames_dir, utt_ids), prosody=prosody,
                       population_prosody=population)
        rows = manifest[manifest["utt_id"].isin(utt_ids)]
        return cls(model, audio_paths={r.utt_id: resolve_audio_path(r.audio_path, data_root)
                                       for r in rows.itertuples()}, prosody=prosody,
                   population_prosody=population)

    def batch(self, utt_ids: list[str], norms: list[str] | None = None,
              ) -> tuple[dict[str, torch.Tensor], list[int]]:
        """(model inputs: audio_values, audio_mask and prosody_values if any; input frames
        per clip). `norms`: each clip's prosody normalisation (speaker when not given)."""
        if self.frames is not None:
            arrays = [self.frames[u] for u in utt_ids]
            values, mask = collate_frames(arrays)
            n_frames = [len(a) for a in arrays]
        else:
            audio = [read_audio(self.audio_paths[u], 16000)[0] for u in utt_ids]
            values, mask = self.model.model.audio_encoder.featurize(audio)
            n_frames = [int(m.sum()) for m in mask]
        inputs = {"audio_values": values, "audio_mask": mask}
        if self.prosody is not None:
            norms = norms or [SPEAKER_NORM] * len(utt_ids)
            inputs["prosody_values"] = torch.from_numpy(np.stack(
                [self._prosody(u, norm) for u, norm in zip(utt_ids, norms)]))
        return inputs, n_frames

    def n_frames(self, utt_id: str) -> int:
        """Input frames of a clip (100 per second) without featurizing it: its stored frame
        features, else its audio's duration."""
        if self.frames is not None:
            return len(self.frames[utt_id])
        return max(1, int(sf.info(str(self.audio_paths[utt_id])).duration * INPUT_FRAME_RATE))

    def _prosody(self, utt_id: str, norm: str) -> np.ndarray:
        if norm == SPEAKER_NORM:
            return self.prosody[utt_id]
        if norm != POPULATION_NORM:
            raise ValueError(f"unknown prosody normalisation {norm!r}")
        if self.population_prosody is None:
            raise ValueError("an example asks for a population-normalised prosody vector: "
                             "build the AudioSource with the training population's statistics")
        return self.population_prosody[utt_id]


def _clips(examples: list[dict]) -> tuple[list[str], list[str]]:
    """(utt_ids, prosody normalisations) of a batch of examples."""
    return ([e["utt_id"] for e in examples],
            [e.get("prosody_norm", SPEAKER_NORM) for e in examples])


class SpeechCollator:
    """Examples (components.speechlm.sft_data) -> model inputs with target-only labels."""

    def __init__(self, tokenizer, source: AudioSource, label_set: list[str],
                 max_length: int = 512, answer_weight: float = 1.0, claim_weight: float = 1.0,
                 label_smoothing: float = 0.0):
        """`answer_weight`: loss weight of the label (or perception answer) tokens against 1
        for the rest of the target; `claim_weight`: of the words of a SER rationale that state
        a level of the voice (the distill verifier's claims, "the speaking rate is fast").
        Either other than 1 emits `loss_weights`. `label_smoothing` > 0 also emits, per SER
        row, where its label's deciding token is and every label's token there
        (`label_choices`), for a loss that spreads that share of the label's target over the
        label set (`components.speechlm.train.answer_weighted_trainer`)."""
        self.tokenizer, self.source, self.label_set = tokenizer, source, list(label_set)
        self.config = source.model.config
        self.max_length = max_length
        self.answer_weight = answer_weight
        self.claim_weight = claim_weight
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def target_ids(self, example: dict) -> tuple[list[int], list[float]]:
        """The target's tokens (with its ending) and their loss weights."""
        text = example["target"] + self.ending(example)
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        spans = [(answer_span(example), self.answer_weight)]
        if self.claim_weight != 1.0 and example["task"] == "ser" and example.get("rationale"):
            spans += [(claim.span, self.claim_weight)
                      for claim in acoustic_claims(example["target"])]
        weights = [max([w for (start, end), w in spans if a < end and b > start], default=1.0)
                   for a, b in encoded["offset_mapping"]]
        return encoded["input_ids"], weights

    def label_choices(self, example: dict, target: list[int]) -> tuple[int, list[int]]:
        """(index in `target`, the SER example's target ids, of the token where the label set's
        continuations part; each label's token there, in label-set order)."""
        texts = label_continuations(example["fmt"], example["transcript_source"],
                                    self.label_set, transcript=example["transcript"],
                                    rationale=example["rationale"])
        shared, rests = split_label_tokens(self.tokenizer, [texts[x] for x in self.label_set])
        choices = [rest[0] for rest in rests]
        gold = choices[self.label_set.index(example["label"])]
        at = len(shared)
        if len(set(choices)) < len(choices) or target[:at + 1] != shared + [gold]:
            raise ValueError(
                f"{example['utt_id']}: label smoothing needs labels that part at one token of "
                f"the target, and {self.label_set} do not (tokens {choices} after {at} shared)")
        return at, choices

    def prompt_ids(self, example: dict, n_frames: int) -> list[int]:
        messages = example_prompt(example, self.label_set, n_audio_tokens(self.config, n_frames),
                                  self.config.audio_token)
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                  tokenize=True, return_dict=False)

    def length(self, example: dict) -> int:
        """Tokens of the example's prompt and target: what its row in a batch costs."""
        prompt = self.prompt_ids(example, self.source.n_frames(example["utt_id"]))
        return min(self.max_length, len(prompt) + len(self.target_ids(example)[0]))

    def ending(self, example: dict) -> str:
        """EOS after a complete target. A label-only SER target (a dev clip without a teacher
        rationale) gets none: the model would go on with its rationale, so its loss then
        measures the label, not a premature stop."""
        if example["task"] == "ser" and not example.get("rationale"):
            return ""
        return self.tokenizer.eos_token or ""

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        audio, n_frames = self.source.batch(*_clips(examples))
        rows, labels, weights, choices = [], [], [], []
        for example, frames in zip(examples, n_frames):
            prompt = self.prompt_ids(example, frames)
            target, target_weights = self.target_ids(example)
            if len(prompt) >= self.max_length:
                raise ValueError(f"{example['utt_id']}: the prompt alone has {len(prompt)} tokens "
                                 f"(max_length {self.max_length}); lower tokens_per_second")
            keep = self.max_length - len(prompt)
            rows.append(prompt + target[:keep])
            labels.append([IGNORE] * len(prompt) + target[:keep])
            weights.append([0.0] * len(prompt) + target_weights[:keep])
            if self.label_smoothing and example["task"] == "ser":
                at, ids = self.label_choices(example, target)
                choices.append((len(prompt) + at, ids) if at < keep else None)
            else:
                choices.append(None)
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        label_ids = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        loss_weights = torch.zeros((len(rows), width), dtype=torch.float32)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (row, lab, weight) in enumerate(zip(rows, labels, weights)):
            input_ids[i, :len(row)] = torch.tensor(row)
            label_ids[i, :len(lab)] = torch.tensor(lab)
            loss_weights[i, :len(weight)] = torch.tensor(weight)
            attention[i, :len(row)] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention, "labels": label_ids, **audio}
        if self.answer_weight != 1.0 or self.claim_weight != 1.0 or self.label_smoothing:
            batch["loss_weights"] = loss_weights
        if self.label_smoothing:
            batch["label_smoothing"] = torch.tensor(
                [self.label_smoothing if c else 0.0 for c in choices])
            batch["label_position"] = torch.tensor([c[0] if c else -1 for c in choices])
            batch["label_choices"] = torch.tensor(
                [c[1] if c else [0] * len(self.label_set) for c in choices])
        return batch

    def generation_batch(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        """Prompts only, left-padded, for `generate`."""
        audio, n_frames = self.source.batch(*_clips(examples))
        rows = [self.prompt_ids(e, f) for e, f in zip(examples, n_frames)]
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, width - len(row):] = torch.tensor(row)
            attention[i, width - len(row):] = 1
        return {"input_ids": input_ids, "attention_mask": attention, **audio}
