"""`emoreason predict`: a trained SpeechLM folder on any audio file.

The folder's `task.json` says how the model was trained (target format, transcript source,
label set, transcriber), so the prompt at prediction time matches the one it learned from.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from components.audio_io import read_audio
from components.speechlm.encoders import n_audio_tokens
from components.speechlm.formats import build_prompt, parse_output

TASK_FILE = "task.json"


def write_task(folder: Path, fmt: str, transcript_source: str, labels: list[str],
               asr: str) -> None:
    (folder / TASK_FILE).write_text(json.dumps(
        {"format": fmt, "transcript_source": transcript_source, "labels": labels, "asr": asr},
        indent=2) + "\n")


class Predictor:
    def __init__(self, model, tokenizer, task: dict, max_new_tokens: int = 200):
        self.model, self.tokenizer, self.task = model.eval(), tokenizer, task
        self.max_new_tokens = max_new_tokens
        self._asr = None

    def transcript(self, audio16k) -> str:
        if self._asr is None:
            from components.features.asr import make_transcriber

            self._asr = make_transcriber(self.task["asr"])
        return self._asr.transcribe(audio16k)[0]

    @torch.no_grad()
    def predict_one(self, path: Path) -> dict:
        audio, _ = read_audio(path, 16000)
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
                                  max_new_tokens=self.max_new_tokens, do_sample=False,
                                  pad_token_id=self.tokenizer.pad_token_id)
        text = self.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        parsed = parse_output(text, fmt, labels)
        return {"path": str(path), "transcript": heard if source == "asr" else
                parsed["transcript"], "label": parsed["label"], "rationale": parsed["rationale"],
                "well_formed": parsed["well_formed"]}

    def predict(self, paths: list[Path]) -> list[dict]:
        return [self.predict_one(p) for p in paths]


def load_predictor(folder: Path) -> Predictor:
    from components.speechlm.io import load_speechlm

    task_path = folder / TASK_FILE
    if not task_path.exists():
        raise FileNotFoundError(f"{folder} is not a trained model folder (no {TASK_FILE})")
    model, tokenizer = load_speechlm(folder)
    return Predictor(model, tokenizer, json.loads(task_path.read_text()))
