"""TRL's GRPOTrainer for the SpeechLM: each row's audio goes into generation and into every
log-prob forward, and the rewards are combined the GRPO-PTR way.

TRL's GRPOTrainer takes text and images, not audio. This subclass keeps everything else of
TRL's (loss variants, clipping, KL, reward weighting, logging, checkpoints) and touches four
private methods, which is why trl is pinned and `tests/test_rl_trainer.py` fails loudly when an
upgrade moves them:
- `_generate_and_score_completions(inputs)`: the rows' audio (frames, masks, prosody vectors)
  is built for the rows in order before TRL generates, scores and computes the old-policy and
  reference log-probs; it is returned with the rows, so TRL's shuffling and splitting of the
  batch carry it along with each row;
- `_tokenize_prompts(prompts)`: hands that audio to `generate` (the model encodes it on the
  prefill step);
- `_get_per_token_logps_and_entropies(...)`: runs TRL's own computation chunk by chunk with
  the chunk's audio fed to the backbone by a forward pre-hook (TRL calls
  `model.base_model(...)` through its fused LM head, never our `forward`);
- `_calculate_rewards(...)`: TRL's per-function rewards, then the reasoning column becomes
  tau x R_t (and 0 while the progressive schedule is off), so TRL's weighted sum is exactly
  R = w_f R_f + w_o R_o + w_t tau R_t.
The KL reference is the model with its LoRA adapters off (the SFT model merged into the
weights): TRL builds that reference for PEFT models only, so the trainer is made with beta 0
(no reference copy is loaded) and beta is set back after.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from trl import GRPOTrainer

from components.rl.ptr import ProgressiveSchedule, combine
from components.rl.timing import PhaseTimes

AUDIO_KEYS = ("audio_values", "audio_mask", "prosody_values")
"""Model inputs that carry a row's audio."""


class AudioFeed:
    """A forward pre-hook on the SpeechLM backbone that gives a forward the audio of the rows
    it runs on, when the caller (TRL) passed none; it counts the forwards it served, and the
    prompt-bearing forwards that got no audio (should be none)."""

    def __init__(self, backbone: torch.nn.Module, audio_token_id: int):
        self.audio_token_id = audio_token_id
        self.rows: dict[str, torch.Tensor] | None = None
        self.served = self.missed = 0
        backbone.register_forward_pre_hook(self._hook, with_kwargs=True)

    @contextlib.contextmanager
    def feeding(self, rows: dict[str, torch.Tensor]) -> Iterator[None]:
        previous, self.rows = self.rows, rows
        try:
            yield
        finally:
            self.rows = previous

    def _hook(self, module, args, kwargs):
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if kwargs.get("audio_values") is not None or input_ids is None \
                or not (input_ids == self.audio_token_id).any():
            return None
        if self.rows is None:
            self.missed += 1
            return None
        n = self.rows["audio_values"].shape[0]
        if n != input_ids.shape[0]:
            raise ValueError(f"audio for {n} rows but the forward runs on {input_ids.shape[0]}")
        self.served += 1
        device = input_ids.device
        return args, {**kwargs, **{k: v.to(device) for k, v in self.rows.items()}}


class AudioGRPOTrainer(PhaseTimes, GRPOTrainer):
    """GRPOTrainer whose rows carry audio; `audio_for(utt_ids)` returns the model's audio
    inputs for a list of clips (components.speechlm.collate.AudioSource.batch). Each step
    logs where its time went (components.rl.timing)."""

    def __init__(self, *args, audio_for, reward_names: list[str],
                 schedule: ProgressiveSchedule, ptr_cfg, log_table=None,
                 log_table_every: int = 0, **kwargs):
        grpo_args = kwargs["args"]
        beta, grpo_args.beta = grpo_args.beta, 0.0
        try:
            super().__init__(*args, **kwargs)
        finally:
            grpo_args.beta = beta
        self.beta = beta
        if len(reward_names) != len(self.reward_funcs):
            raise ValueError(f"{len(reward_names)} reward names for {len(self.reward_funcs)} "
                             "reward functions")
        self.reward_func_names = list(reward_names)  # registry names, for PTR and the logs
        self.audio_for = audio_for
        self.schedule, self.ptr_cfg = schedule, ptr_cfg
        self.log_table, self.log_table_every = log_table, log_table_every
        unwrapped = self.accelerator.unwrap_model(self.model)
        self.feed = AudioFeed(unwrapped.model, unwrapped.config.audio_token_id)
        self._rows_audio: dict[str, torch.Tensor] | None = None
        self._rows: list[dict] = []

    # -- audio with the rows ---------------------------------------------------------------
    def _generate_and_score_completions(self, inputs):
        self._rows = inputs
        audio = self.audio_for([row["utt_id"] for row in inputs])
        self._rows_audio = audio
        try:
            output = super()._generate_and_score_completions(inputs)
        finally:
            self._rows_audio = None
        n = output["prompt_ids"].shape[0]
        device = output["prompt_ids"].device
        for key, value in audio.items():
            if value.shape[0] != n:
                raise ValueError(f"{value.shape[0]} audio rows for {n} completions")
            output[key] = value.to(device)
        return output

    def _tokenize_prompts(self, prompts):
        """The rows' own prompt tokens (the SFT collator's, placeholders included) rather than
        a re-tokenization of the decoded text, and their audio for `generate`."""
        if self._rows_audio is None or len(self._rows) != len(prompts):
            raise RuntimeError("prompts to tokenize without their rows' audio")
        return [list(row["prompt_ids"]) for row in self._rows], None, dict(self._rows_audio)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self._rows_audio = {k: inputs[k] for k in AUDIO_KEYS if k in inputs}
        try:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            self._rows_audio = None

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask,
                                           logits_to_keep, batch_size=None, **kwargs):
        audio = self._rows_audio
        if audio is None:
            raise RuntimeError("log-probs asked for rows whose audio is unknown")
        size = batch_size or input_ids.size(0)
        logps, entropies, aux = [], [], []
        for start in range(0, input_ids.size(0), size):
            part = slice(start, start + size)
            with self.feed.feeding({k: v[part] for k, v in audio.items()}):
                lp, ent, ax = super()._get_per_token_logps_and_entropies(
                    model, input_ids[part], attention_mask[part], logits_to_keep,
                    batch_size=size, **kwargs)
            logps.append(lp)
            if ent is not None:
                entropies.append(ent)
            if ax is not None:
                aux.append(ax)
        return (torch.cat(logps), torch.cat(entropies) if entropies else None,
                torch.stack(aux).mean() if aux else None)

    # -- GRPO-PTR rewards ------------------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        raw = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        mode = "train" if self.model.training else "eval"
        names = list(self.reward_func_names)
        weights = self.reward_weights.tolist()
        values = raw.detach().cpu().numpy().astype("float64")
        if "outcome" in names or "outcome_annotator_aware" in names:
            outcome = values[:, names.index("outcome" if "outcome" in names
                                            else "outcome_annotator_aware")]
            if mode == "train":
                self.schedule.update([bool(v >= 1.0) for v in np.nan_to_num(outcome)])
        total, stats = combine(values, names, weights, self.num_generations if mode == "train"
                               else self.num_generations_eval, self.ptr_cfg, self.schedule.on)
        metrics = self._metrics[mode]
        for key, value in stats.items():
            metrics[key].append(float(value))
        metrics["reward/total"].append(float(np.mean(total)))
        metrics["reward/total_std"].append(float(np.std(total)))
        for i, name in enumerate(names):
            short = "outcome" if name.startswith("outcome") else name
            metrics[f"reward/{short}"].append(float(np.nanmean(values[:, i])))
            metrics[f"reward/{short}_std"].append(float(np.nanstd(values[:, i])))
        metrics["train/accuracy"].append(float(self.schedule.accuracy))
        metrics["completion/length"].append(
            float(np.mean([len(ids) for ids in completion_ids_list])))
        self._maybe_log_table(prompts, completions, names, values, total, stats)
        # TRL's weighted sum of the returned columns is the PTR total: the reasoning column
        # carries tau (and the schedule) so that sum(w_i r_i) == total.
        adjusted = raw.clone()
        if "reasoning" in names:
            i = names.index("reasoning")
            weight = weights[i]
            rest = np.delete(values, i, axis=1) @ np.delete(np.array(weights), i) \
                if len(names) > 1 else np.zeros(len(total))
            column = (total - rest) / weight if weight else np.zeros(len(total))
            adjusted[:, i] = torch.as_tensor(column, dtype=raw.dtype, device=raw.device)
        return adjusted

    def _maybe_log_table(self, prompts, completions, names, values, total, stats) -> None:
        """A table of this step's first completions (this process's rows) with their rewards,
        every `log_table_every` steps, on the main process."""
        step = self.state.global_step
        if not (self.log_table and self.log_table_every and self.accelerator.is_main_process
                and step % self.log_table_every == 0):
            return
        n = min(len(completions), len(self._rows))
        rows = {"utt_id": [self._rows[i]["utt_id"] for i in range(n)],
                "label": [self._rows[i]["label"] for i in range(n)],
                "completion": [str(c) for c in completions[:n]],
                **{name: [float(v) for v in values[:n, i]] for i, name in enumerate(names)},
                "total": [float(t) for t in total[:n]]}
        self.log_table(rows, f"completions/step_{step:05d}.json")

