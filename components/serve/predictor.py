"""Batched prediction with a trained model folder: label probabilities in one forward pass,
then the rationale.

The folder's `task.json` says how the model was trained (target format, transcript source,
label set, transcriber, audio or text inputs), so prompts at prediction time match the ones
it learned from. Every label is scored after the prompt and the text before the label
("Emotion: "); with one-token labels that is a single forward pass per batch and equals
greedy decoding of the label, and the label reported is always the argmax of these
probabilities. The folder's label temperature (`label_temperature` in task.json, fitted on
dev clips after training: `components.speechlm.calibration`) divides the label scores before
the softmax; the argmax is the same. The rationale is then generated after the chosen label
(`explain_after`), or first and the label scored after it (`reason_first`, or a model that
writes the transcript).
With one-token labels and a rationale after them, the scoring pass is the first step of the
call that generates the rationale, so each prompt is encoded once.

Serving, `emoreason predict` and the evaluate stage all go through `predict_clips`; they differ
only in where a clip's inputs come from: raw audio measured here (`measure_audio`), or the
features stage's table and frame shards (evaluation).
"""
from __future__ import annotations

import copy
import json
import math
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from components.device import resolve_device, to_device
from components.distill.records import LEVEL_FIELDS
from components.features.prosody import SR
from components.serve.claim_guard import ClaimGuard, clip_levels
from components.serve.repeat_block import RepeatBlock, word_ids
from components.speechlm.encoders import collate_frames, n_audio_tokens
from components.speechlm.formats import (
    NO_TRANSCRIPT,
    build_prompt,
    label_continuations,
    label_first,
    neutralise,
    parse_output,
    split_label_tokens,
)
from components.speechlm.io import LEVELS_FILE, TASK_FILE
from components.speechlm.prosody_vector import clip_vectors, load_stats, raw_vectors
from components.speechlm.zeroshot import clip_cues, text_prompt

Turns = Sequence[tuple[str, str]]
"""Earlier turns of a chat after the clip's prompt: (the model's answer, the follow-up)."""

FOLLOWUP_FIELDS = {"pitch": "pitch_level", "pitch_range": "pitch_range_level",
                   "energy": "energy_level", "rate": "rate_level", "pauses": "pause_level",
                   "intonation": "intonation"}
"""Follow-up template field -> the clip's measured level (`ClipInput.cues`)."""


def followup(template: str, clip: ClipInput) -> str:
    """A follow-up instruction filled in with the clip's measured levels ("unknown" where a
    level could not be measured) and transcript; a template without fields is used as is.
    An unknown field is an error naming the fields there are."""
    values = {name: clip.cues.get(level) or "unknown" for name, level in FOLLOWUP_FIELDS.items()}
    values["transcript"] = neutralise(clip.transcript or NO_TRANSCRIPT, "transcript")
    try:
        return template.format(**values)
    except (KeyError, IndexError) as exc:
        raise ValueError(f"follow-up instruction names an unknown field {exc}; fields: "
                         f"{sorted(values)}") from None


CUE_VALUES = ("f0_median_hz", "f0_range_st", "energy_dbfs", "rate_sps", "pause_ratio")
"""Measured values returned with a prediction beside the levels (LEVEL_FIELDS)."""


@dataclass
class ClipInput:
    """What the model needs of one clip, however it was obtained."""

    transcript: str
    caption: str
    """The prosody caption (text-only models read it instead of hearing the audio)."""
    cues: dict
    audio: np.ndarray | None = None
    """16 kHz mono waveform: the encoder featurizes it when `frames` is None."""
    frames: np.ndarray | None = None
    """The frames encoder's input [T, 83], when already computed (features stage shards)."""
    prosody: np.ndarray | None = None
    """The prosody token's vector [88] (models with a prosody token)."""


def cues_of(row: dict) -> dict:
    """The measured levels and values of a features row, JSON-ready (NaN -> None), and
    `pitch_reference`: whose pitch cut points the pitch level is relative to (the gender
    estimated from the voice for new audio, the corpus's label for the features stage's clips)."""
    out: dict = {k: (str(row[k]) if row.get(k) is not None else None) for k in LEVEL_FIELDS}
    for key in CUE_VALUES:
        value = row.get(key)
        out[key] = None if value is None or not math.isfinite(float(value)) else float(value)
    out["pitch_reference"] = row.get("pitch_reference") or (
        f"labelled {row['gender']}" if row.get("gender") else None)
    return out


def left_pad(rows: list[list[int]], pad: int, device: torch.device,
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(input ids, attention mask) of token rows padded on the left, as `generate` takes them,
    on `device`."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1
    return ids.to(device), mask.to(device)


def one_token_labels(continuations: list[tuple[list[int], list[list[int]]]]) -> bool:
    """Every label is one token after the shared text (`Predictor._continuations`): one
    forward pass scores them all."""
    return all(len(s) == 1 for _, rest in continuations for s in rest)


def padded_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded rows (what `generate` computes), so a scored prompt is
    encoded exactly as when it is generated from."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


class Predictor:
    def __init__(self, model, tokenizer, task: dict, folder: Path, max_new_tokens: int = 96,
                 self_correct: tuple[str, int] | None = None,
                 repeat_block: tuple[int, int] | None = None, claim_guard: bool = False):
        self.model, self.tokenizer, self.task = model.eval(), tokenizer, task
        self.repeat_block = repeat_block
        """(n, max_repeats): no run of n words of a generated text occurs more than max_repeats
        times (`components.serve.repeat_block`); None: plain greedy decoding."""
        self.claim_guard = claim_guard
        """Generated cue claims must agree with the clip's measured levels
        (`components.serve.claim_guard`)."""
        self.refinement = self_correct if self_correct and self_correct[1] > 0 else None
        """(follow-up instruction, rounds): `predict_clips` answers with the last round's
        answer (see `self_correct`); None: the first answer."""
        self.folder = Path(folder)
        self.labels: list[str] = list(task["labels"])
        self.fmt, self.source = task["format"], task["transcript_source"]
        self.text_only = task.get("inputs", "audio") == "text"
        self.with_caption = bool(task.get("prosody_caption", False))
        """An audio model trained with the prosody caption in its prompt (`sft.prosody_caption`)."""
        self.max_new_tokens = max_new_tokens
        self.label_temperature = float(task.get("label_temperature", 1.0))
        """The label scores are divided by it before the softmax over the label set: fitted on
        dev clips after training (`components.speechlm.calibration`); the argmax stays."""
        self.device = model.device
        """Where the model is: every input is moved there."""
        config = model.config
        self._stats = load_stats(self.folder) if config.prosody_dim and not self.text_only \
            else None
        self.uses_frames = not self.text_only and config.encoder == "frames"
        """The encoder reads frame features, so stored ones can stand in for the audio."""
        self.uses_prosody = self._stats is not None
        """The model has a prosody token (its clips need a prosody vector)."""
        self.prefix_cache = True
        """Read the prompt's constant start from a cache in the scoring pass (`_prefix_cache`);
        False encodes whole prompts (the benchmark's comparison)."""
        self.score_in_generate = True
        """With a rationale after one-token labels, score the labels in the first step of the
        call that generates the rationale (`_score_and_generate`: the prompt is encoded once);
        False scores them in a pass of their own first (the benchmark's comparison)."""
        self._keep: list[bool] | None = None
        """Per label of the model, whether an answer may take it (set by `allow`); None: all."""
        self._prefix: tuple[list[int], object] | None = None
        self._words: torch.Tensor | None = None
        """The repeat block's word id per token (`repeat_block.word_ids`), built on first use."""

    def allow(self, labels: Sequence[str] | None) -> None:
        """Answer with one of `labels` only (None: any label of the model): the others get
        probability 0, the rest is renormalised, and the rationale follows the allowed label
        chosen. Cross-corpus evaluation restricts a model to the labels it shares with the
        corpus, as a classifier trained on the shared classes would be."""
        if labels is not None:
            unknown = sorted(set(labels) - set(self.labels))
            if unknown or not labels:
                raise ValueError(f"allowed labels must be a non-empty subset of the model's "
                                 f"{self.labels}; not known: {unknown}")
        self._keep = None if labels is None else [x in set(labels) for x in self.labels]

    def _probabilities(self, scores: torch.Tensor) -> np.ndarray:
        """[B, labels] probabilities of [B, labels] label log-probabilities: divided by the
        label temperature and softmaxed over the labels `allow` keeps (the others get 0)."""
        if self._keep is not None:
            scores = scores.masked_fill(~torch.tensor(self._keep, device=scores.device),
                                        -math.inf)
        return (scores / self.label_temperature).softmax(-1).cpu().numpy()

    # ------------------------------------------------------------------ inputs
    def measure_audio(self, audio: list[np.ndarray], speakers: list[str | None] | None = None,
                      transcripts: list[str | None] | None = None) -> list[ClipInput]:
        """Transcript, cues, prosody vector and (frames encoders) frame features of raw 16 kHz
        clips, measured with the features stage's code against the training corpus's levels:
        the frames come from the same F0 track as the cues, as in training, so a clip is
        tracked once, not again by the encoder. Clips of one named speaker are normalised over
        each other, as in training. A given transcript is used as the clip's reference (no
        speech recognition), as the features stage does."""
        with tempfile.TemporaryDirectory() as tmp:
            paths = []
            for i, clip in enumerate(audio):
                paths.append(Path(tmp) / f"clip{i:05d}.wav")
                sf.write(paths[-1], np.asarray(clip, dtype=np.float32), SR, subtype="FLOAT")
            feats = clip_cues(paths, self.task["asr"], self.folder / LEVELS_FILE, speakers,
                              transcripts, frames=self.uses_frames,
                              speech_embedding=self.task.get("speech_embedding", "none"))
        prosody = [None] * len(audio)
        if self._stats is not None:
            raw = raw_vectors(feats, self.model.config.prosody_dim)
            prosody = list(clip_vectors(raw, self._stats, speakers))
        return [ClipInput(transcript=row["transcript"] or "", caption=row["prosody_caption"],
                          cues=cues_of(row), audio=np.asarray(a, dtype=np.float32), prosody=p,
                          frames=row.get("frames"))
                for row, a, p in zip(feats.to_dict("records"), audio, prosody)]

    # ------------------------------------------------------------------ prompts
    def messages(self, clip: ClipInput, n_frames: int, history: Turns = ()) -> list[dict]:
        """The chat of one clip: its prompt, then each earlier (answer, follow-up) turn."""
        config = self.model.config
        if self.text_only:
            messages = text_prompt(clip.transcript, clip.caption, self.fmt, self.labels,
                                   config.audio_token)
        else:
            messages = build_prompt("ser", self.fmt, self.source, clip.transcript, self.labels,
                                    n_audio_tokens(config, n_frames), config.audio_token,
                                    prosody=clip.caption if self.with_caption else None)
        for answer, followup in history:
            messages += [{"role": "assistant", "content": answer.strip()},
                         {"role": "user", "content": followup}]
        return messages

    def _prompt_ids(self, clip: ClipInput, n_frames: int, history: Turns = ()) -> list[int]:
        return self.tokenizer.apply_chat_template(self.messages(clip, n_frames, history),
                                                  add_generation_prompt=True, tokenize=True,
                                                  return_dict=False)

    def _audio(self, clips: list[ClipInput]) -> tuple[dict, list[int]]:
        """Model audio inputs of a batch (on the model's device) and the input frames per
        clip."""
        if self.text_only:
            return {}, [0] * len(clips)
        if self.uses_frames and all(c.frames is not None for c in clips):
            values, mask = collate_frames([c.frames for c in clips])
        else:
            values, mask = self.model.featurize([c.audio for c in clips])
        inputs = {"audio_values": values, "audio_mask": mask}
        if self.model.config.prosody_dim:
            inputs["prosody_values"] = torch.from_numpy(np.stack([c.prosody for c in clips]))
        return to_device(inputs, self.device), [int(n) for n in mask.sum(-1).tolist()]

    def chat_inputs(self, clips: list[ClipInput], histories: list[Turns] | None = None,
                    ) -> tuple[list[list[int]], dict]:
        """(token rows of the clips' chats up to the assistant's turn, their audio inputs)."""
        audio, n_frames = self._audio(clips)
        histories = histories or [()] * len(clips)
        return [self._prompt_ids(c, n, h) for c, n, h in zip(clips, n_frames, histories)], audio

    # ------------------------------------------------------------------ scoring
    def _continuations(self, transcripts: list[str | None], rationales: list[str | None],
                       ) -> list[tuple[list[int], list[list[int]]]]:
        """Per clip: (token ids of the text shared by every label's continuation, then each
        label's remaining ids)."""
        out = []
        for transcript, rationale in zip(transcripts, rationales):
            texts = label_continuations(self.fmt, self.source, self.labels,
                                        transcript=transcript, rationale=rationale)
            out.append(split_label_tokens(self.tokenizer, [texts[label] for label in self.labels]))
        return out

    @torch.no_grad()
    def _prefix_cache(self) -> tuple[list[int], object]:
        """(the token ids every prompt of this model starts with, their key/value cache): the
        system turn and the user turn up to the first audio placeholder or clip text. It is
        the same for every clip, so the scoring pass encodes it once per model, not per clip
        (a fifth of a 4-second clip's prompt)."""
        if self._prefix is None:
            rows = [self._prompt_ids(ClipInput(transcript=t, caption=t, cues={}), n)
                    for t, n in (("a", 100), ("b", 200))]
            audio_id = self.model.config.audio_token_id
            n = 0
            while n < min(map(len, rows)) and rows[0][n] == rows[1][n] != audio_id:
                n += 1
            ids = rows[0][:n]
            cache = self.model(input_ids=torch.tensor([ids], device=self.device),
                               use_cache=True).past_key_values if ids else None
            self._prefix = (ids, cache)
        return self._prefix

    def _next_token_logits(self, rows: list[list[int]], audio: dict) -> torch.Tensor:
        """[B, vocab] logits of the token after each row, in one forward pass; rows that all
        start with the model's prompt prefix (`_prefix_cache`) read it from its cache and are
        padded between it and the rest, with the positions they have unpadded."""
        prefix, cache = self._prefix_cache() if self.prefix_cache else ([], None)
        n = len(prefix)
        if n and all(len(r) > n and r[:n] == prefix for r in rows):
            ids, mask = left_pad([r[n:] for r in rows], self.tokenizer.pad_token_id, self.device)
            mask = torch.cat([mask.new_ones(len(rows), n), mask], 1)
            past = copy.deepcopy(cache)  # the forward pass appends to the cache it is given
            past.batch_repeat_interleave(len(rows))
            return self.model(input_ids=ids, attention_mask=mask, **audio,
                              position_ids=padded_positions(mask)[:, n:], past_key_values=past,
                              logits_to_keep=1).logits[:, -1]
        ids, mask = left_pad(rows, self.tokenizer.pad_token_id, self.device)
        return self.model(input_ids=ids, attention_mask=mask, **audio,
                          position_ids=padded_positions(mask), logits_to_keep=1).logits[:, -1]

    @torch.no_grad()
    def _score(self, prompts: list[list[int]], audio: dict,
               continuations: list[tuple[list[int], list[list[int]]]]) -> np.ndarray:
        """[B, labels] probabilities: the log-probability of each label's tokens after the
        prompt and the shared text, softmaxed over the label set. One forward pass of B rows
        when every label is one token from there, else B x labels rows."""
        pad = self.tokenizer.pad_token_id
        if one_token_labels(continuations):
            rows = [p + shared for p, (shared, _) in zip(prompts, continuations)]
            return self._one_token_probabilities(self._next_token_logits(rows, audio),
                                                 continuations)
        rows, spans = [], []
        for p, (shared, rest) in zip(prompts, continuations):
            for suffix in rest:
                rows.append(p + shared + suffix)
                spans.append(len(suffix))
        ids, mask = left_pad(rows, pad, self.device)
        repeat = len(self.labels)
        expanded = {k: v.repeat_interleave(repeat, 0) for k, v in audio.items()}
        logp = self.model(input_ids=ids, attention_mask=mask, position_ids=padded_positions(mask),
                          **expanded).logits.float().log_softmax(-1)
        width = ids.shape[1]
        totals = []
        for r, n in enumerate(spans):
            positions = torch.arange(width - n, width, device=self.device)
            totals.append(logp[r, positions - 1].gather(1, ids[r, positions][:, None]).sum())
        scores = torch.stack(totals).reshape(len(prompts), repeat)
        return self._probabilities(scores)

    def _label_tokens(self, continuations: list[tuple[list[int], list[list[int]]]],
                      ) -> torch.Tensor:
        """[B, labels] each label's one token after the shared text."""
        return torch.tensor([[s[0] for s in rest] for _, rest in continuations],
                            device=self.device)

    def _one_token_probabilities(self, logits: torch.Tensor,
                                 continuations: list[tuple[list[int], list[list[int]]]],
                                 ) -> np.ndarray:
        """[B, labels] probabilities of one-token labels from the [B, vocab] logits of the
        position after the shared text: their log-probabilities softmaxed over the label set."""
        scores = logits.float().log_softmax(-1).gather(1, self._label_tokens(continuations))
        return self._probabilities(scores)

    @torch.no_grad()
    def _score_and_generate(self, prompts: list[list[int]], audio: dict,
                            continuations: list[tuple[list[int], list[list[int]]]],
                            clips: list[ClipInput]) -> tuple[np.ndarray, list[str]]:
        """([B, labels] probabilities, the text generated after each chosen label) from one
        `generate` call on the prompts and the shared text: its first step may only pick a
        label's token, and the raw logits of that step are the scores (`_score`'s one-token
        case). Scoring in a pass of its own and generating after the label encode every prompt
        twice; on CPU that second encoding is about as long as writing the rationale."""
        targets = self._label_tokens(continuations)
        first = targets if self._keep is None else targets[:, self._keep]
        ids, mask = left_pad([p + shared for p, (shared, _) in zip(prompts, continuations)],
                             self.tokenizer.pad_token_id, self.device)

        class LabelFirst(LogitsProcessor):
            """Only the labels' tokens at the first generated position."""

            def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor):
                if input_ids.shape[1] != ids.shape[1]:
                    return scores
                return torch.full_like(scores, -math.inf).scatter(
                    1, first, scores.gather(1, first))

        out = self.model.generate(input_ids=ids, attention_mask=mask, **audio,
                                  max_new_tokens=self.max_new_tokens + 1, do_sample=False,
                                  pad_token_id=self.tokenizer.pad_token_id,
                                  logits_processor=LogitsProcessorList(
                                      [LabelFirst(), *self._processors(ids, clips)]),
                                  output_logits=True, return_dict_in_generate=True)
        texts = self.tokenizer.batch_decode(out.sequences[:, ids.shape[1] + 1:],
                                            skip_special_tokens=True)
        return self._one_token_probabilities(out.logits[0], continuations), texts

    @torch.no_grad()
    def _generate(self, rows: list[list[int]], audio: dict, clips: list[ClipInput]) -> list[str]:
        ids, mask = left_pad(rows, self.tokenizer.pad_token_id, self.device)
        out = self.model.generate(input_ids=ids, attention_mask=mask, **audio,
                                  max_new_tokens=self.max_new_tokens, do_sample=False,
                                  pad_token_id=self.tokenizer.pad_token_id,
                                  logits_processor=LogitsProcessorList(
                                      self._processors(ids, clips)))
        return self.tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)

    def _processors(self, ids: torch.Tensor, clips: list[ClipInput]) -> list:
        """The decoding's logits processors for prompts `ids` (left-padded) of `clips`: the
        repeat block, then the claim guard (each when set)."""
        out: list = []
        if self.repeat_block is not None:
            if self._words is None:
                self._words = word_ids(self.tokenizer)
            out.append(RepeatBlock(*self.repeat_block, prompt_len=ids.shape[1],
                                   words=self._words))
        if self.claim_guard:
            out.append(ClaimGuard(self.tokenizer, [clip_levels(c.cues) for c in clips],
                                  prompt_len=ids.shape[1]))
        return out

    # ------------------------------------------------------------------ prediction
    def _predict_batch(self, clips: list[ClipInput], rationale: bool,
                       histories: list[Turns] | None = None) -> list[dict]:
        prompts, audio = self.chat_inputs(clips, histories)
        first = label_first(self.fmt, self.source)
        texts: list[str] = [""] * len(clips)
        transcripts: list[str | None] = [None] * len(clips)
        reasons: list[str | None] = [None] * len(clips)
        if not first and (rationale or self.source == "model"):
            texts = self._generate(prompts, audio, clips)
            parsed = [parse_output(t, self.fmt, self.labels) for t in texts]
            transcripts = [p["transcript"] or "" for p in parsed]
            reasons = [p["rationale"] for p in parsed]
        continuations = self._continuations(transcripts, reasons)
        fused = first and rationale and self.score_in_generate and \
            one_token_labels(continuations)
        if fused:
            probs, after = self._score_and_generate(prompts, audio, continuations, clips)
        else:
            probs = self._score(prompts, audio, continuations)
        chosen = [self.labels[int(i)] for i in probs.argmax(1)]
        if first:
            heads = label_continuations(self.fmt, self.source, self.labels)
            if fused:
                texts = [heads[label] + t for label, t in zip(chosen, after)]
            elif rationale:
                rows = [p + self.tokenizer(heads[label], add_special_tokens=False)["input_ids"]
                        for p, label in zip(prompts, chosen)]
                after = self._generate(rows, audio, clips)
                texts = [heads[label] + t for label, t in zip(chosen, after)]
            else:
                texts = [heads[label] for label in chosen]
        results = []
        for clip, text, label, p in zip(clips, texts, chosen, probs):
            parsed = parse_output(text, self.fmt, self.labels)
            results.append({
                "transcript": clip.transcript if self.source == "asr" or self.text_only
                else (parsed["transcript"] or ""),
                "label": label,
                "probabilities": {name: float(v) for name, v in zip(self.labels, p)},
                "rationale": parsed["rationale"] if rationale else None,
                "cues": clip.cues,
                "well_formed": bool(parsed["well_formed"] and parsed["label"] == label)
                if rationale else None,
                "output": text,
            })
        return results

    def predict_clips(self, clips: list[ClipInput], rationale: bool = True,
                      batch_size: int = 8, progress: bool = False) -> list[dict]:
        """One result per clip, in order: transcript, label, probabilities (label -> p),
        rationale, cues, well_formed (None without a rationale), output (the raw text).
        With `refinement` set and a rationale asked for, the answer after the last round."""
        from tqdm import tqdm

        results: list[dict] = []
        starts = range(0, len(clips), batch_size)
        for start in tqdm(starts, desc="predict", disable=not progress, unit="batch"):
            results += self._predict_batch(clips[start:start + batch_size], rationale)
        if self.refinement and rationale and clips:
            instruction, rounds = self.refinement
            results = self.self_correct(clips, results, instruction, rounds, batch_size,
                                        progress)[-1]
        return results

    def self_correct(self, clips: list[ClipInput], first: list[dict], instruction: str,
                     rounds: int, batch_size: int = 8, progress: bool = False,
                     ) -> list[list[dict]]:
        """Refinement (arXiv 2505.11924): `rounds` more answers per clip, each given the whole
        chat so far (prompt, every earlier answer, each followed by `instruction` filled in
        with the clip's cues and transcript, see `followup`). Returns the results of rounds
        1..K (as `predict_clips`'); `first` are round 0's, whose `output` starts the chat."""
        from tqdm import tqdm

        answers = [[r["output"]] for r in first]
        texts = [followup(instruction, clip) for clip in clips]
        out: list[list[dict]] = []
        for k in range(1, rounds + 1):
            results: list[dict] = []
            for start in tqdm(range(0, len(clips), batch_size), disable=not progress,
                              desc=f"round {k}", unit="batch"):
                stop = start + batch_size
                histories = [[(a, t) for a in said]
                             for said, t in zip(answers[start:stop], texts[start:stop])]
                results += self._predict_batch(clips[start:stop], True, histories)
            for said, r in zip(answers, results):
                said.append(r["output"])
            out.append(results)
        return out

    def predict_audio(self, audio: list[np.ndarray], speakers: list[str | None] | None = None,
                      rationale: bool = True, batch_size: int = 8,
                      transcripts: list[str | None] | None = None) -> list[dict]:
        """Raw 16 kHz mono clips -> one result per clip (see `predict_clips`); a clip's given
        transcript replaces speech recognition (most of the time of a short clip)."""
        if not audio:
            return []
        return self.predict_clips(self.measure_audio(audio, speakers, transcripts), rationale,
                                  batch_size)


DTYPES = ("float32", "bfloat16", "int8")
INT8_WARNING = ("serve.dtype int8 damages the answers: most rationales come out malformed and "
                "about twice as long, and labels can differ from float32's "
                "(benchmarks/bench_serve.py measures both); serve float32 or bfloat16")


def cast_for_serving(model, dtype: str):
    """The model in the serving number format, its LoRA merged into the weights first (an
    unmerged adapter costs two more matmuls per adapted layer at every generated token):
    `float32` as trained; `bfloat16` weights and activations (fast on CPUs with AVX-512 BF16 and
    on GPUs); `int8` dynamic quantization of the LM's linear layers (weights int8 with one scale
    per output channel, activations quantized per batch: CPU; the LM head stays float32). int8
    is not fit for serving yet and says so in a warning: on the demo model its label agreed
    with float32 on 7 of 40 clips; on a RAVDESS fold-0 model 1 of 8 full answers was well formed
    (float32: 8 of 8), twice as long, so the full answer was slower than float32's."""
    if dtype not in DTYPES:
        raise ValueError(f"serving dtype must be one of {DTYPES}, got {dtype!r}")
    if model.has_lora:
        model.merge_lora()
    if dtype == "bfloat16":
        return model.to(torch.bfloat16)
    if dtype == "int8":
        warnings.warn(INT8_WARNING, UserWarning, stacklevel=3)  # at load_predictor's caller
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model.model.language_model = quantize_dynamic(
                model.model.language_model, {torch.nn.Linear: per_channel_dynamic_qconfig},
                dtype=torch.qint8)
    return model


def load_predictor(folder: Path | str, max_new_tokens: int = 96,
                   dtype: str = "float32", device: str = "cpu",
                   self_correct: tuple[str, int] | None = None,
                   repeat_block: Sequence[int] | None = None,
                   claim_guard: bool = False) -> Predictor:
    """A Predictor for a model folder written by `emoreason sft`, `emoreason zeroshot` or
    `emoreason model export`, with its weights in `dtype` (see `cast_for_serving`) on `device`
    (a `base.device` name, see `components.device.resolve_device`); `self_correct`:
    (instruction, rounds) of refinement after the first answer; `repeat_block`: (n, k) of
    `inference.repeat_block`; `claim_guard`: `inference.claim_guard`."""
    from components.speechlm.io import load_speechlm

    folder = Path(folder)
    task_path = folder / TASK_FILE
    if not task_path.exists():
        raise FileNotFoundError(f"{folder} is not a trained model folder (no {TASK_FILE})")
    where = resolve_device(device)
    if dtype == "int8" and where.type != "cpu":
        raise ValueError(f"serving dtype int8 (dynamic quantization) runs on the CPU only, "
                         f"not on {where}: set base.device to cpu or serve.dtype to float32 or "
                         "bfloat16")
    model, tokenizer = load_speechlm(folder)
    model = cast_for_serving(model, dtype).to(where)
    return Predictor(model, tokenizer, json.loads(task_path.read_text()), folder, max_new_tokens,
                     self_correct, tuple(repeat_block) if repeat_block else None, claim_guard)


def frames_of(frames_dir: Path | str, utt_ids: list[str]) -> dict[str, np.ndarray]:
    """The features stage's frame features of these clips (float32)."""
    from components.features.frames import load_frames

    return {u: np.asarray(a, dtype=np.float32)
            for u, a in load_frames(frames_dir, set(utt_ids)).items()}


def clips_from_features(features: pd.DataFrame, frames: dict[str, np.ndarray] | None,
                        predictor: Predictor, audio: dict[str, np.ndarray] | None = None,
                        ) -> list[ClipInput]:
    """Inputs of clips the features stage measured: its transcript, caption, levels, frames
    and speaker-normalised prosody vector (the speaker is known, as in training)."""
    from components.speechlm.prosody_vector import speaker_vectors

    prosody = [None] * len(features)
    if predictor.uses_prosody:
        prosody = speaker_vectors(features, predictor.model.config.prosody_dim)
    clips = []
    for row, vector in zip(features.to_dict("records"), prosody):
        utt = row["utt_id"]
        clips.append(ClipInput(
            transcript=row["transcript"] or "", caption=row["prosody_caption"],
            cues=cues_of(row), frames=None if frames is None else frames[utt],
            audio=None if audio is None else audio[utt], prosody=vector))
    return clips
