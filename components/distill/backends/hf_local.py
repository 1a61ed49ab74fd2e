"""A teacher that runs a local transformers causal LM on the CPU (default: the bundled SmolLM2).

Prompts are rendered with the tokenizer's chat template and generated in batches with LEFT
padding, so every prompt ends where generation starts and the continuation is simply what
follows the padded prompt.

What is deterministic:
- greedy decoding (temperature 0) gives each clip the same text whatever batch it is in (the
  tests compare batched with one-by-one generation; only float rounding in a near tie could
  differ); the seed and batch size do not matter;
- sampling seeds torch once per batch (in a forked RNG, so the caller's state is untouched) from
  the run seed and the batch's requests, so the same request list gives the same texts on the
  same machine and library versions;
  a clip's text can change when it lands in a different batch (another batch size, or a resumed
  run that sends only the unfinished clips), which is why sampling puts the batch size into
  `config()`.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import cached_file

from components.config import TeacherConfig
from components.distill.backends.base import TeacherStats, request_seed
from components.distill.records import TeacherReply, TeacherRequest
from components.models.bundled import resolve_model


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def weights_digest(model: torch.nn.Module) -> str:
    """Hash of every parameter and buffer: a retrained model in the same folder is a new model
    (about a second for 135M parameters)."""
    h = hashlib.blake2b(digest_size=8)
    for key, tensor in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().contiguous().view(torch.uint8).numpy())
    return h.hexdigest()


class HFLocalTeacher:
    """Batched chat generation with a local causal LM, float32 on the CPU."""

    name = "hf"

    def __init__(self, cfg: TeacherConfig, seed: int = 0, progress: bool = True):
        if cfg.temperature < 0 or not 0 < cfg.top_p <= 1:
            raise ValueError("temperature must be >= 0 and top_p in (0, 1]")
        if cfg.hf_batch_size < 1 or cfg.max_new_tokens < 1:
            raise ValueError("hf_batch_size and max_new_tokens must be >= 1")
        path = resolve_model(cfg.hf_model)
        if path.startswith((".", "/")) and not Path(path).is_dir():
            raise FileNotFoundError(f"teacher model folder {path} does not exist")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
            config_json = Path(cached_file(path, "config.json")).read_bytes()
        except OSError as exc:
            raise FileNotFoundError(
                f"teacher model {cfg.hf_model!r} could not be loaded from {path}: {exc}") from exc
        if not self.tokenizer.chat_template:
            raise ValueError(f"the tokenizer of {cfg.hf_model!r} has no chat template")
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.eval()
        self.cfg = cfg
        self.seed = seed
        self.progress = progress
        self.sample = cfg.temperature > 0
        self.max_positions = getattr(self.model.config, "max_position_embeddings", None)
        self.stats = TeacherStats()
        self._fingerprint = {
            "config_sha": _digest(config_json),
            "weights_sha": weights_digest(self.model),
            "chat_template_sha": _digest(self.tokenizer.chat_template.encode()),
        }

    def config(self) -> dict:
        """The configured model name (never the cache path) with hashes of its config, weights
        and chat template, and the decoding settings that change the text."""
        out = {"backend": self.name, "model": self.cfg.hf_model, **self._fingerprint,
               "max_new_tokens": self.cfg.max_new_tokens}
        if self.sample:
            out.update(temperature=self.cfg.temperature, top_p=self.cfg.top_p, seed=self.seed,
                       batch_size=self.cfg.hf_batch_size)
        else:
            out["decoding"] = "greedy"
        return out

    def generate(self, requests: list[TeacherRequest]) -> list[TeacherReply]:
        prompts = [self.tokenizer.apply_chat_template(list(r.messages), tokenize=False,
                                                      add_generation_prompt=True)
                   for r in requests]
        lengths = [len(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        replies: list[TeacherReply | None] = [None] * len(requests)
        todo = []
        for i, n in enumerate(lengths):
            if self.max_positions and n + self.cfg.max_new_tokens > self.max_positions:
                replies[i] = TeacherReply(text=None, error=(
                    f"prompt of {n} tokens + {self.cfg.max_new_tokens} new tokens exceeds the "
                    f"model's {self.max_positions} positions"))
            else:
                todo.append(i)
        # Batches of similar prompt length waste less compute on padding.
        todo.sort(key=lambda i: lengths[i])
        self.stats.n_requests += len(requests)
        self.stats.n_failed += len(requests) - len(todo)
        size = self.cfg.hf_batch_size
        with tqdm(total=len(todo), desc="hf teacher", unit="clip", leave=False,
                  disable=not self.progress) as bar:
            for start in range(0, len(todo), size):
                batch = todo[start:start + size]
                for i, reply in zip(batch, self._generate_batch([prompts[i] for i in batch],
                                                                [requests[i] for i in batch])):
                    replies[i] = reply
                bar.update(len(batch))
        return replies

    def _generate_batch(self, prompts: list[str],
                        requests: list[TeacherRequest]) -> list[TeacherReply]:
        inputs = self.tokenizer(prompts, return_tensors="pt", padding=True,
                                add_special_tokens=False)
        decoding = (dict(do_sample=True, temperature=self.cfg.temperature, top_p=self.cfg.top_p)
                    if self.sample else dict(do_sample=False, temperature=None, top_p=None,
                                             top_k=None))
        start = time.perf_counter()
        try:
            # fork_rng: the batch's seed does not leak into the caller's random state
            with torch.random.fork_rng(devices=[]), torch.inference_mode():
                torch.manual_seed(request_seed(self.seed, requests))
                output = self.model.generate(
                    **inputs, max_new_tokens=self.cfg.max_new_tokens,
                    pad_token_id=self.tokenizer.pad_token_id, **decoding)
        except RuntimeError as exc:  # e.g. out of memory: this batch fails, the run goes on
            self.stats.n_failed += len(prompts)
            return [TeacherReply(text=None, error=f"generation failed: {exc}")] * len(prompts)
        finally:
            self.stats.latency_s += time.perf_counter() - start
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        eos = self.model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        replies = []
        for row in new_tokens.tolist():
            if not eos.intersection(row):
                self.stats.n_truncated += 1
            text = self.tokenizer.decode(row, skip_special_tokens=True).strip()
            if text:
                replies.append(TeacherReply(text=text))
            else:
                self.stats.n_failed += 1
                replies.append(TeacherReply(text=None, error="empty generation"))
        return replies
