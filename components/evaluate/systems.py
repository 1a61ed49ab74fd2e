"""Each system's predictions on the evaluation clips, in one shape: utt_id, label,
probabilities (label -> p or None), rationale, well_formed.

The SpeechLM folders run through the serving predictor (`components.serve.predictor`), fed
with what the features stage measured (transcript, cues, frame features, speaker-normalised
prosody vector: the speakers of a test split are known), so evaluation scores the code path
that serves. The `encoder` row is the SpeechLM's warmed-up encoder with its own
classification head: what the audio side alone knows, so explanation is never bought with
accuracy unseen. Both run on `device`, a `base.device` name.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from components.audio_io import read_audio
from components.config import InferenceConfig
from components.device import resolve_device
from components.evaluate.baselines import predictions
from components.paths import resolve_audio_path


def _audio(rows: pd.DataFrame, data_root: str) -> dict[str, np.ndarray]:
    return {r.utt_id: read_audio(resolve_audio_path(r.audio_path, data_root), 16000)[0]
            for r in rows.itertuples()}


def speechlm_predictions(folder: Path, rows: pd.DataFrame, frames_dir: Path, data_root: str,
                         rationale: bool, max_new_tokens: int, batch_size: int,
                         device: str = "cpu", inference: InferenceConfig | None = None,
                         ) -> tuple[pd.DataFrame, list[str]]:
    """(predictions of a model folder on `rows` (manifest + features), its label set), decoded
    as `inference` says (its repeat block and claim guard; None: plain greedy)."""
    from components.evaluate.refinement import frame_of

    predictor, clips = predictor_clips(folder, rows, frames_dir, data_root, max_new_tokens,
                                        device, inference)
    results = predictor.predict_clips(clips, rationale=rationale, batch_size=batch_size,
                                      progress=True)
    return frame_of(results, rows["utt_id"].tolist()), predictor.labels


def predictor_clips(folder: Path, rows: pd.DataFrame, frames_dir: Path, data_root: str,
                     max_new_tokens: int, device: str, inference: InferenceConfig | None = None,
                     allowed: list[str] | None = None) -> tuple[object, list]:
    """(the serving predictor of a model folder decoding as `inference` says and answering one
    of `allowed` labels (None: any, see `Predictor.allow`), its inputs for `rows`)."""
    from components.serve.predictor import clips_from_features, frames_of, load_predictor

    predictor = load_predictor(folder, max_new_tokens=max_new_tokens, device=device,
                               repeat_block=inference.repeat_block if inference else None,
                               claim_guard=bool(inference and inference.claim_guard))
    predictor.allow(allowed)
    ids = rows["utt_id"].tolist()
    frames = frames_of(frames_dir, ids) if predictor.uses_frames else None
    audio = None if predictor.text_only or frames is not None else _audio(rows, data_root)
    return predictor, clips_from_features(rows, frames, predictor, audio)


def speechlm_refinement(folder: Path, rows: pd.DataFrame, first: pd.DataFrame,
                        frames_dir: Path, data_root: str, inference, max_new_tokens: int,
                        batch_size: int, device: str = "cpu", allowed: list[str] | None = None,
                        ) -> dict[str, list[pd.DataFrame]]:
    """A model folder's self-correction rounds on `rows`, from its first answers `first`:
    instruction (and `control`) -> predictions of rounds 1..K (`inference`: InferenceConfig;
    `allowed`: as `predictor_clips`')."""
    from components.evaluate.refinement import run_rounds

    predictor, clips = predictor_clips(folder, rows, frames_dir, data_root, max_new_tokens,
                                        device, inference, allowed)
    first = first.set_index("utt_id").loc[rows["utt_id"]].reset_index()
    return run_rounds(predictor, clips, first, inference.instructions, inference.control,
                      inference.self_correct_rounds, batch_size)


@torch.no_grad()
def encoder_predictions(folder: Path, rows: pd.DataFrame, frames_dir: Path, data_root: str,
                        batch_size: int = 16, device: str = "cpu",
                        ) -> tuple[pd.DataFrame, list[str]]:
    """(predictions of the model folder's warmed-up encoder + head, its label set)."""
    from components.serve.predictor import frames_of
    from components.speechlm.encoders import collate_frames
    from components.speechlm.pretrain import EncoderClassifier
    from components.speechlm.prosody_vector import speaker_vectors

    classifier = EncoderClassifier.load(folder).to(resolve_device(device))
    ids = rows["utt_id"].tolist()
    frames = frames_of(frames_dir, ids) if classifier.config.encoder == "frames" else None
    audio = _audio(rows, data_root) if frames is None else None
    prosody = None
    if classifier.prosody_projector is not None:
        prosody = dict(zip(ids, speaker_vectors(rows, classifier.config.prosody_dim)))
    probs = []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        if frames is not None:
            values, mask = collate_frames([frames[u] for u in chunk])
        else:
            values, mask = classifier.audio_encoder.featurize([audio[u] for u in chunk])
        inputs = {"audio_values": values, "audio_mask": mask}
        if classifier.prosody_projector is not None:
            inputs["prosody_values"] = torch.from_numpy(np.stack([prosody[u] for u in chunk]))
        probs.append(classifier.predict_proba(inputs).cpu().numpy())
    return predictions(ids, classifier.labels, np.concatenate(probs)), classifier.labels
