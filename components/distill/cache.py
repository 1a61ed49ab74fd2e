"""An append-only JSONL cache of teacher generations, keyed by what produced them.

The key hashes the clip id, the backend's configuration (for the template writer, the hash of
its code), what the backend reads (the rendered prompt, or the cues for the template writer),
the label mode, the retry hint and the draw (STaR iteration).
Each batch is appended and flushed to disk as it finishes, so a killed run resumes without
regenerating finished clips, and a changed prompt regenerates only what reads the prompt.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

from components.distill.records import TeacherReply, TeacherRequest


def generation_key(backend, request: TeacherRequest) -> str:
    payload = {
        "utt_id": request.utt_id,
        "backend": backend.config(),
        "reads": list(request.messages) if getattr(backend, "uses_messages", True)
        else asdict(request.cues),
        "with_label": request.with_label,
        "hint": request.hint,
        "draw": request.draw,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


class GenerationCache:
    """key -> TeacherReply, loaded from and appended to one JSONL file."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.entries: dict[str, TeacherReply] = {}
        self.hits = 0
        if self.path.exists():
            with self.path.open() as fh:
                for line in fh:
                    try:
                        item = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut short by a crash: that generation is redone
                    self.entries[item["key"]] = TeacherReply(item.get("text"), item.get("error"))

    def generate(self, backend, requests: list[TeacherRequest]) -> list[TeacherReply]:
        """Replies for `requests`; only uncached ones reach the backend, and only successful
        generations are stored (errors are retried on the next run)."""
        keys = [generation_key(backend, r) for r in requests]
        todo = [i for i, k in enumerate(keys) if k not in self.entries]
        self.hits += len(requests) - len(todo)
        if todo:
            replies = backend.generate([requests[i] for i in todo])
            fresh = {keys[i]: reply for i, reply in zip(todo, replies)}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as fh:
                for key, reply in fresh.items():
                    if reply.text is not None:
                        fh.write(json.dumps({"key": key, "text": reply.text}) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            self.entries.update({k: r for k, r in fresh.items() if r.text is not None})
            return [self.entries.get(k) or fresh[k] for k in keys]
        return [self.entries[k] for k in keys]
