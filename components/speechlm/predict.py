"""`emoreason predict`: a trained SpeechLM folder on any audio file.

The folder's `task.json` says how the model was trained (target format, transcript source,
label set, transcriber), so the prompt at prediction time matches the one it learned from.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from components.audio_io import read_audio
from components.speechlm.encoders import n_audio_tokens
from components.speechlm.formats import build_prompt, parse_output
from components.speechlm.prosody_vector import clip_vectors, load_stats

TASK_FILE = "task.json"


def write_task(folder: Path, fmt: str, transcript_source: str, labels: list[str],
               asr: str, inputs: str = "audio") -> None:
    """`inputs`: `audio` (soft audio tokens) or `text` (transcript and prosody caption only)."""
    (folder / TASK_FILE).write_text(json.dumps(
        {"format": fmt, "transcript_source": transcript_source, "labels": labels, "asr": asr,
         "inputs": inputs}, indent=2) + "\n")


class Predictor:
    def __init__(self, model, tokenizer, task: dict, folder: Path, max_new_tokens: int = 200):
        self.model, self.tokenizer, self.task = model.eval(), tokenizer, task
        self.folder = folder
        self.max_new_tokens = max_new_tokens
        self._asr = None

    def transcript(self, audio16k) -> str:
        if self._asr is None:
            from components.features.asr import make_transcriber

            self._asr = make_transcriber(self.task["asr"])
        return self._asr.transcribe(audio16k)[0]

    @torch.no_grad()
    def predict_one(self, path: Path, audio, prosody: torch.Tensor | None) -> dict:
        fmt, source, labels = self.task["format"], self.task["transcript_source"], \
            self.task["labels"]
        heard = self.transcript(audio) if source == "asr" else None
        values, mask = self.model.model.audio_encoder.featurize([audio])
        config = self.model.config
        messages = build_prompt("ser", fmt, source, heard, labels,
                                n_audio_tokens(config, int(mask.sum())), config.audio_token)
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                 return_tensors="pt", return_dict=True)
        out = self.model.generate(**ids, audio_values=values, audio_mask=mask,
                                  prosody_values=prosody,
                                  max_new_tokens=self.max_new_tokens, do_sample=False,
                                  pad_token_id=self.tokenizer.pad_token_id)
        text = self.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        parsed = parse_output(text, fmt, labels)
        return {"path": str(path), "transcript": heard if source == "asr" else
                parsed["transcript"], "label": parsed["label"], "rationale": parsed["rationale"],
                "well_formed": parsed["well_formed"]}

    def predict_text(self, paths: list[Path]) -> list[dict]:
        """The zero-shot folder: transcript and prosody caption measured, then text only."""
        from components.speechlm.zeroshot import (
            LEVELS_FILE,
            clip_cues,
            generate_text,
            text_prompt,
        )

        cues = clip_cues(paths, self.task["asr"], self.folder / LEVELS_FILE)
        fmt, labels = self.task["format"], self.task["labels"]
        prompts = [text_prompt(c.transcript or "", c.prosody_caption, fmt, labels,
                               self.model.config.audio_token) for c in cues.itertuples()]
        texts = generate_text(self.model, self.tokenizer, prompts, self.max_new_tokens)
        results = []
        for path, cue, text in zip(paths, cues.itertuples(), texts):
            parsed = parse_output(text, fmt, labels)
            results.append({"path": str(path), "transcript": cue.transcript or "",
                            "label": parsed["label"], "rationale": parsed["rationale"],
                            "well_formed": parsed["well_formed"]})
        return results

    def predict(self, paths: list[Path], same_speaker: bool = False) -> list[dict]:
        """One result per clip. `same_speaker`: the clips are one speaker's, so the prosody
        token is normalised over them rather than over the training population."""
        if self.task.get("inputs", "audio") == "text":
            return self.predict_text(paths)
        audio = [read_audio(p, 16000)[0] for p in paths]
        prosody = [None] * len(paths)
        if self.model.config.prosody_dim:
            vectors = clip_vectors(audio, load_stats(self.folder), same_speaker)
            prosody = [torch.from_numpy(v)[None] for v in vectors]
        return [self.predict_one(p, a, v) for p, a, v in zip(paths, audio, prosody)]


def export_for_serving(folder: Path, out: Path) -> Path:
    """The model in `folder` with its LoRA adapters merged (`io.export_merged`), plus the files
    prediction reads beside the weights: the task, prosody statistics and levels."""
    from components.speechlm.io import export_merged
    from components.speechlm.prosody_vector import NORM_FILE
    from components.speechlm.zeroshot import LEVELS_FILE

    if not (folder / TASK_FILE).exists():
        raise FileNotFoundError(f"{folder} is not a trained model folder (no {TASK_FILE})")
    if out.resolve() == folder.resolve():
        raise ValueError("export to another folder: the adapter folder is the training record")
    export_merged(folder, out)
    for name in (TASK_FILE, NORM_FILE, LEVELS_FILE):
        if (folder / name).exists():
            shutil.copyfile(folder / name, out / name)
    return out


def load_predictor(folder: Path) -> Predictor:
    from components.speechlm.io import load_speechlm

    task_path = folder / TASK_FILE
    if not task_path.exists():
        raise FileNotFoundError(f"{folder} is not a trained model folder (no {TASK_FILE})")
    model, tokenizer = load_speechlm(folder)
    return Predictor(model, tokenizer, json.loads(task_path.read_text()), folder)
