"""SFT warm start of the SpeechLM with TRL's SFTTrainer, and the checks that it learned.

The encoder is first warmed up as an emotion classifier, with heads for the perception levels
when prosody enhancement is on (components.speechlm.pretrain); its emotion head and an eGeMAPS
logistic regression then feed the evidence token, and its level heads with level regressions
the level evidence tokens (components.speechlm.evidence, .evidence_fit). Loss is on
the target tokens only (the collator masks the prompt and audio placeholders); the encoder
then trains at its own, lower learning rate with the projectors, the LM's LoRA adapter at the
main one; the label's tokens weigh `answer_weight` times the rest of the target in the loss.
Checkpoints each epoch (or every `save_steps`) outside the model folder, under a key of the
run's inputs, params and code (`checkpoint_folder`): DVC deletes a stage's outputs before it
runs, so a killed `dvc repro` resumes from the last complete checkpoint instead of starting
over, and the folder is removed once the model is saved. Early stopping on the dev loss;
after training the evidence token's sharpening is chosen on the dev labels, and the dev
clips are decoded: label accuracy against the majority-class rate
(with the speaker known, and unknown: population-normalised prosody), well-formed share,
prosody-perception accuracy against chance, and a table of sample generations. Last, the
label temperature is fitted on the dev clips (`components.speechlm.calibration`) and saved
with the model.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from components.cache_keys import run_key
from components.config import Params, SFTConfig, as_dict
from components.device import resolve_device, to_device, trainer_precision
from components.distill.stage import read_records
from components.prepare.schema import read_manifest
from components.run_stats import write_run_stats
from components.speechlm.batching import (
    LengthGroupedShuffledSampler,
    length_grouped_order,
    padded_tokens,
)
from components.speechlm.collate import AudioSource, SpeechCollator
from components.speechlm.evidence_fit import prepare_evidence, prepare_level_evidence
from components.speechlm.formats import PERCEPTION_TASKS, label_first, parse_output
from components.speechlm.model import IGNORE
from components.speechlm.pretrain import CLASSIFIER_FILE, freeze_warmed, pretrain_encoder
from components.speechlm.prosody_vector import population_stats, save_stats, vector_names
from components.speechlm.sft_data import (
    PERCEPTION_COLUMNS,
    POPULATION_NORM,
    SPEAKER_NORM,
    SftDataConfig,
    build_sft_examples,
    labelled_clips,
    perception_probes,
    split_summary,
    spread,
)


def sft_examples(cfg: SFTConfig, seed: int) -> tuple[list[dict], list[dict], pd.DataFrame,
                                                        list[str], str]:
    """(train examples, dev examples, manifest, label set, data root)."""
    manifest, meta = read_manifest(cfg.manifest)
    features = pd.read_parquet(cfg.features)
    rationales = read_records(cfg.rationales)
    data_cfg = SftDataConfig(fmt=cfg.format, transcript_source=cfg.transcript_source,
                             perception_ratio=cfg.perception_ratio, splits=["train", "dev"],
                             seed=seed, max_rationale_words=cfg.max_target_words,
                             population_norm_share=cfg.population_norm_share,
                             prosody_caption=cfg.prosody_caption)
    examples = build_sft_examples(features, manifest, rationales, data_cfg)
    train = [e for e in examples if e["split"] == "train"]
    dev = [e for e in examples if e["split"] == "dev"]
    if not train or not dev:
        raise ValueError(f"SFT needs train and dev examples, got {len(train)} and {len(dev)}")
    return train, dev, manifest, list(meta.labels), meta.data_root


def perception_levels(features: pd.DataFrame, perception_ratio: float) -> dict[str, dict[str, str]]:
    """Perception task -> {utt_id: measured level} for the encoder warm-up; none when prosody
    enhancement is off (the ablation turns it off everywhere)."""
    if perception_ratio <= 0:
        return {}
    return {task: dict(zip(features["utt_id"], features[column].astype(str)))
            for task, column in PERCEPTION_COLUMNS.items()}


def make_optimizer(model, cfg: SFTConfig) -> torch.optim.Optimizer:
    """AdamW with the audio side (encoder, projectors) at its own learning rate."""
    audio, lm = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (audio if ("audio_encoder" in name or "projector" in name) else lm).append(param)
    groups = [{"params": lm, "lr": cfg.learning_rate}]
    if audio:
        groups.append({"params": audio, "lr": cfg.encoder_learning_rate})
    return torch.optim.AdamW(groups, weight_decay=0.01)


LABEL_FIRST_TOKENS = 12
"""Tokens decoded for the unknown-speaker dev accuracy when the answer starts with the label:
"Emotion: " and the longest label word with room to spare (only the label is read)."""


@torch.no_grad()
def generate(model, collator: SpeechCollator, examples: list[dict], max_new_tokens: int,
             batch_size: int = 8) -> list[str]:
    """Greedy continuations of the examples' prompts."""
    model.eval()
    texts = []
    tokenizer = collator.tokenizer
    for start in range(0, len(examples), batch_size):
        batch = to_device(collator.generation_batch(examples[start:start + batch_size]),
                          model.device)
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
        texts += tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:],
                                        skip_special_tokens=True)
    return texts


def answer_tokens(cfg: SFTConfig) -> int:
    """New tokens that hold a whole dev answer (label and rationale)."""
    return 48 + int(cfg.max_target_words * 1.6)


def label_tokens(cfg: SFTConfig) -> int:
    """New tokens that decode as far as the label: a few where it is written first
    ("Emotion: <label>"), else the whole answer."""
    return LABEL_FIRST_TOKENS if label_first(cfg.format, cfg.transcript_source) \
        else answer_tokens(cfg)


def choose_evidence_power(model, collator: SpeechCollator, dev_ser: list[dict],
                          label_set: list[str], cfg: SFTConfig) -> dict:
    """Sharpen the evidence token as far as the dev labels' UA says (the smallest power on a
    tie) and return {evidence_power, evidence_power_dev_ua: {power: UA}, evidence_power_minutes}.

    Trained at power 1, the LM's label followed the token's argmax on 0.98 of RAVDESS train
    clips but on 0.90 of unseen actors' clips, where the token is flatter, and lost 0.06 UA
    to the token where they differed (fold 0). A sharper token moves a loosely read label
    toward the ensemble's argmax; how far is chosen on dev, never on test."""
    from sklearn.metrics import balanced_accuracy_score

    ser = [{**e, "prosody_norm": SPEAKER_NORM} for e in dev_ser]
    gold = [e["label"] for e in ser]
    start = time.perf_counter()
    scores = {}
    for power in sorted(set(cfg.evidence_power_grid)):
        model.set_evidence_power(power)
        texts = generate(model, collator, ser, max_new_tokens=label_tokens(cfg))
        predicted = [parse_output(t, cfg.format, label_set)["label"] or "" for t in texts]
        scores[power] = float(balanced_accuracy_score(gold, predicted))
    best = max(scores, key=lambda p: (scores[p], -p))
    model.set_evidence_power(best)
    print(f"sft: evidence power {best:g} (dev UA by power: "
          f"{', '.join(f'{p:g}: {s:.3f}' for p, s in scores.items())})", flush=True)
    return {"evidence_power": best, "evidence_power_dev_ua": scores,
            "evidence_power_minutes": round((time.perf_counter() - start) / 60, 2)}


def calibrated_on_dev(model, collator: SpeechCollator, dev: list[dict]) -> dict:
    """The label temperature fitted on the dev clips (`components.speechlm.calibration`), or
    {"label_temperature": None} where the format cannot be calibrated; either said in a line."""
    from components.speechlm.calibration import announce, calibrate

    return announce("sft", calibrate(model, collator, dev, model.device))


def power_metrics(sharpened: dict) -> dict[str, float]:
    """MLflow metrics of `choose_evidence_power`'s result (none when it did not run)."""
    if not sharpened:
        return {}
    return {"evidence_power": sharpened["evidence_power"],
            "evidence_power_minutes": sharpened["evidence_power_minutes"],
            **{f"evidence_power_{p:g}_dev_ua": ua
               for p, ua in sharpened["evidence_power_dev_ua"].items()}}


def evaluate(model, collator: SpeechCollator, dev: list[dict], label_set: list[str],
             cfg: SFTConfig, train_labels: list[str]) -> dict:
    """Decoded dev accuracy vs the majority-class rate, with the speaker known (the prosody
    token speaker-normalised, as the evaluate stage feeds it) and unknown (population-normalised,
    as for a single served clip); perception accuracy on every measured question of the same
    clips vs chance and the best constant answer. Without a prosody token nothing depends on
    the speaker: both accuracies are the same decoding."""
    ser = [e for e in dev if e["task"] == "ser"]
    ser = [{**ser[i], "prosody_norm": SPEAKER_NORM} for i in spread(len(ser), cfg.eval_clips)]

    def decode(examples: list[dict], tokens: int) -> tuple[list[str], list[dict], float]:
        texts = generate(model, collator, examples, max_new_tokens=tokens)
        parsed = [parse_output(t, cfg.format, label_set) for t in texts]
        hits = sum(p["label"] == e["label"] for p, e in zip(parsed, examples))
        return texts, parsed, hits / len(examples)

    texts, parsed, accuracy = decode(ser, answer_tokens(cfg))
    unknown = accuracy if collator.source.prosody is None else \
        decode([{**e, "prosody_norm": POPULATION_NORM} for e in ser], label_tokens(cfg))[2]
    majority = Counter(train_labels).most_common(1)[0][0]
    result = {
        "dev_clips": len(ser),
        "dev_accuracy": accuracy,
        "dev_accuracy_unknown_speaker": unknown,
        "dev_well_formed": sum(p["well_formed"] for p in parsed) / len(ser),
        "majority_label": majority,
        "majority_rate": sum(e["label"] == majority for e in ser) / len(ser),
        "samples": [{"utt_id": e["utt_id"], "label": e["label"], "predicted": p["label"],
                     "output": t} for e, p, t in zip(ser, parsed, texts)],
    }
    asked = ask_perception(model, collator, ser, pd.read_parquet(cfg.features))
    if asked:
        by_task: dict[str, list[bool]] = {}
        for row in asked:
            by_task.setdefault(row["task"], []).append(row["hit"])
        hits = [row["hit"] for row in asked]
        result["perception_overall"] = sum(hits) / len(hits)
        result["perception_questions"] = {t: len(v) for t, v in by_task.items()}
        result["perception_accuracy"] = {t: sum(v) / len(v) for t, v in by_task.items()}
        result["perception_chance"] = {t: 1 / len(PERCEPTION_TASKS[t][1]) for t in by_task}
        # The best constant answer per task: levels are not uniform, so chance flatters.
        result["perception_majority"] = {
            t: Counter(r["level"] for r in asked if r["task"] == t).most_common(1)[0][1]
            / len(v) for t, v in by_task.items()}
    return result


def ask_perception(model, collator: SpeechCollator, ser: list[dict], features: pd.DataFrame,
                   ) -> list[dict]:
    """Every measured perception question of the clips of the SER examples `ser`, answered
    greedily: {utt_id, task, level (measured), answer (first word), hit}."""
    probes = perception_probes(ser, features)
    answers = generate(model, collator, probes, max_new_tokens=4) if probes else []
    rows = []
    for probe, answer in zip(probes, answers):
        words = answer.strip().lower().split()
        first = words[0].strip(".,;:") if words else ""
        rows.append({"utt_id": probe["utt_id"], "task": probe["task"], "level": probe["level"],
                     "answer": first, "hit": first == probe["level"]})
    return rows


SMOOTHING_KEYS = ("label_smoothing", "label_position", "label_choices")
"""The collator's label-smoothing tensors (`SpeechCollator.label_choices`)."""


def smooth_labels(per_token: torch.Tensor, logits: torch.Tensor, epsilon: torch.Tensor,
                  position: torch.Tensor, choices: torch.Tensor) -> torch.Tensor:
    """[B, T-1] token losses with each row's label token (at `position` of the row, predicted
    from the logits one before) scored against (1 - epsilon) on the gold label and epsilon
    spread evenly over the label set's tokens, not over the vocabulary.

    Written by hand because `F.cross_entropy(label_smoothing=)` spreads the mass over all
    ~49k tokens: the label set would keep almost none of it, and the answer weight would
    push mass to tokens the answer never takes. Trained on the hard label alone the SFT
    model put more than 0.99 on its top label for 79-96% of unseen RAVDESS actors' clips,
    most wrong answers included, so GRPO's eight samples of a clip almost always agreed."""
    rows = (position >= 0).nonzero().squeeze(1)
    if not len(rows):
        return per_token
    at = position[rows] - 1
    logp = logits[rows, at].log_softmax(-1).gather(1, choices[rows])
    eps = epsilon[rows].to(per_token.dtype)
    out = per_token.clone()
    out[rows, at] = (1 - eps) * per_token[rows, at] - eps * logp.mean(1)
    return out


def answer_weighted_trainer(lengths: list[int] | None = None):
    """TRL's SFTTrainer with a loss that weights each target token by the collator's
    `loss_weights`. A rationale is long and mostly follows from the label once the label is
    written, so in a plain token mean the one decision that needs the audio is a few percent
    of the loss, too little for the LM to learn to read the soft tokens in a CPU budget.
    With `lengths` (tokens per training example) its batches group examples of similar length
    (`batching.LengthGroupedShuffledSampler`)."""
    from trl import SFTTrainer

    class AnswerWeightedSFTTrainer(SFTTrainer):
        def _get_train_sampler(self, train_dataset=None):
            if lengths is None:
                return super()._get_train_sampler(train_dataset)
            return LengthGroupedShuffledSampler(lengths, self.args.train_batch_size,
                                                self.args.seed)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            weights = inputs.pop("loss_weights", None)
            smoothing = [inputs.pop(k, None) for k in SMOOTHING_KEYS]
            if weights is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            targets = labels[:, 1:]
            weights = weights[:, 1:] * (targets != IGNORE)
            logits = outputs.logits[:, :-1].float()
            per_token = F.cross_entropy(logits.transpose(1, 2), targets.clamp(min=0),
                                        reduction="none")
            if smoothing[0] is not None:
                per_token = smooth_labels(per_token, logits, *smoothing)
            loss = (per_token * weights).sum() / weights.sum().clamp(min=1e-8)
            return (loss, outputs) if return_outputs else loss

    return AnswerWeightedSFTTrainer


def sample_callback(model, collator: SpeechCollator, examples: list[dict], label_set: list[str],
                    fmt: str):
    """A TrainerCallback that logs a table of dev generations to MLflow after each evaluation."""
    import mlflow
    from transformers import TrainerCallback

    class SampleGenerations(TrainerCallback):
        def on_evaluate(self, args, state, control, **kwargs):
            texts = generate(model, collator, examples, max_new_tokens=96)
            epoch = int(round(state.epoch or 0))
            mlflow.log_table({
                "utt_id": [e["utt_id"] for e in examples],
                "label": [e["label"] for e in examples],
                "predicted": [str(parse_output(t, fmt, label_set)["label"]) for t in texts],
                "output": texts,
            }, f"generations/epoch_{epoch:02d}.json")
            model.train()

    return SampleGenerations()


PRETRAINED_FILE = "pretrained.json"
"""The encoder warm-up's metrics, kept with the checkpoints (a resumed run does not redo it)."""


def checkpoint_folder(params: Params) -> Path:
    """`sft.checkpoint_dir/<key>`: the key hashes the sft params (but where the model goes),
    the seed, the transcriber, the content of every input file and the training code, so a
    re-run of the same training resumes and any change starts afresh."""
    cfg = params.sft
    spec = {k: v for k, v in as_dict(cfg).items() if k not in ("out", "checkpoint_dir")}
    key = run_key({"sft": spec, "seed": params.base.seed, "asr": params.features.asr},
                  [Path(cfg.features), Path(cfg.manifest), Path(cfg.rationales), Path(cfg.levels),
                   Path(cfg.frames)], __name__)
    return Path(cfg.checkpoint_dir) / key


def last_checkpoint(folder: Path) -> Path | None:
    """The newest complete `checkpoint-<step>` in `folder` (the Trainer writes its state file
    last, so one without a readable state was cut short by a kill: it is removed)."""
    done: dict[int, Path] = {}
    for path in folder.glob("checkpoint-*"):
        try:
            json.loads((path / "trainer_state.json").read_text())
            done[int(path.name.rpartition("-")[2])] = path
        except (OSError, ValueError):
            shutil.rmtree(path)
    return done[max(done)] if done else None


def train_sft(params: Params, out: Path) -> dict:
    """Train, evaluate, save the model folder to `out`; log it all to MLflow."""
    import mlflow
    from datasets import Dataset
    from transformers import EarlyStoppingCallback
    from trl import SFTConfig as TRLConfig

    from components.speechlm.io import (
        build_speechlm,
        save_speechlm,
        set_label_temperature,
        write_task,
    )
    from components.tracking import stage_run

    cfg = params.sft
    device = resolve_device(params.base.device)
    precision = trainer_precision(device)  # before any work: the Trainer must run there too
    torch.manual_seed(params.base.seed)
    train, dev, manifest, label_set, data_root = sft_examples(cfg, params.base.seed)
    with stage_run("sft", params.tracking, {"sft": as_dict(cfg)}):
        features = pd.read_parquet(cfg.features)
        model, tokenizer = build_speechlm(
            cfg.lm, encoder=cfg.encoder, encoder_lora_r=cfg.encoder_lora_r,
            tokens_per_second=cfg.tokens_per_second,
            audio_dropout=cfg.audio_dropout, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout, prosody_dim=len(vector_names(features)) if cfg.prosody_token else 0,
            frame_norm=cfg.frame_norm, spec_augment=cfg.spec_augment,
            evidence_classes=len(label_set) if cfg.evidence_token else 0,
            level_evidence={task: len(PERCEPTION_TASKS[task][1]) for task in PERCEPTION_COLUMNS}
            if cfg.level_evidence else None)
        model.to(device)  # the encoder warm-up runs where the Trainer will
        utt_ids = {e["utt_id"] for e in train + dev}
        # One set of population statistics: for the training examples marked so and in the
        # folder, for clips of unknown speakers at prediction time.
        stats = population_stats(features, {e["utt_id"] for e in train}) \
            if cfg.prosody_token else None
        source = AudioSource.from_features(model, cfg.frames, manifest, data_root, utt_ids,
                                           features, stats)
        collator = SpeechCollator(tokenizer, source, label_set, answer_weight=cfg.answer_weight,
                                  claim_weight=cfg.claim_weight,
                                  label_smoothing=cfg.label_smoothing)
        if source.frames is not None and cfg.frame_norm == "feature":
            model.model.audio_encoder.input_norm.fit(
                [source.frames[u] for u in sorted({e["utt_id"] for e in train})])
        evidence = {**prepare_evidence(model, tokenizer, features, train, dev, label_set,
                                       params.evaluate.lr_c_grid, params.base.seed),
                    **prepare_level_evidence(model, tokenizer, features, train, dev, stats,
                                             params.evaluate.lr_c_grid, params.base.seed)}
        if evidence:
            mlflow.log_params(evidence)
        checkpoints = checkpoint_folder(params)
        checkpoints.mkdir(parents=True, exist_ok=True)
        resume = last_checkpoint(checkpoints)
        if resume is not None and (checkpoints / PRETRAINED_FILE).exists():
            # The checkpoint holds the warmed-up encoder as trained since: no second warm-up.
            pretrained = json.loads((checkpoints / PRETRAINED_FILE).read_text())
            print(f"sft: resuming from {resume}", flush=True)
        else:
            resume = None
            pretrained = pretrain_encoder(
                model, source.batch, labelled_clips(train), labelled_clips(dev), label_set,
                cfg.encoder_pretrain_epochs, cfg.encoder_pretrain_learning_rate,
                seed=params.base.seed, levels=perception_levels(features, cfg.perception_ratio),
                keep_best=cfg.encoder_pretrain_keep_best,
                log=lambda metrics, epoch: mlflow.log_metrics(metrics, step=epoch),
                classifier_out=checkpoints)
            (checkpoints / PRETRAINED_FILE).write_text(json.dumps(pretrained))
        if cfg.freeze_warmed_encoder:
            freeze_warmed(model)
        steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
        dev_ser = [e for e in dev if e["task"] == "ser"]
        every = "steps" if cfg.save_steps else "epoch"
        args = TRLConfig(
            output_dir=str(checkpoints), per_device_train_batch_size=cfg.batch_size,
            per_device_eval_batch_size=cfg.batch_size, num_train_epochs=cfg.epochs,
            max_steps=cfg.max_steps, learning_rate=cfg.learning_rate, lr_scheduler_type="cosine",
            warmup_steps=max(1, steps_per_epoch // 5), logging_steps=max(1, steps_per_epoch // 5),
            eval_strategy=every, save_strategy=every, eval_steps=cfg.save_steps or None,
            save_steps=cfg.save_steps or None, save_total_limit=2,
            restore_callback_states_from_checkpoint=True,
            load_best_model_at_end=True, metric_for_best_model="eval_loss",
            greater_is_better=False, **precision, seed=params.base.seed,
            remove_unused_columns=False, dataset_kwargs={"skip_prepare_dataset": True},
            report_to=["mlflow"], dataloader_num_workers=0,
            activation_checkpointing=cfg.activation_checkpointing,
        )
        lengths = None
        if cfg.group_by_length:
            lengths = [collator.length(e) for e in train]
            grouped = length_grouped_order(lengths, cfg.batch_size, params.base.seed)
            shuffled = np.random.default_rng(params.base.seed).permutation(len(train)).tolist()
            padding = {name: 1 - sum(lengths) / padded_tokens(lengths, order, cfg.batch_size)
                       for name, order in (("padding_share", grouped),
                                           ("padding_share_random_batches", shuffled))}
            mlflow.log_metrics(padding)
            print(f"sft: padding is {padding['padding_share']:.0%} of the tokens computed in "
                  f"length-grouped batches ({padding['padding_share_random_batches']:.0%} in "
                  "random ones)", flush=True)
        trainer = answer_weighted_trainer(lengths)(
            model=model, args=args, train_dataset=Dataset.from_list(train),
            eval_dataset=Dataset.from_list(dev), data_collator=collator,
            processing_class=tokenizer, optimizers=(make_optimizer(model, cfg), None),
            callbacks=[
                EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience),
                sample_callback(model, collator, [dev_ser[i] for i in spread(len(dev_ser), 6)],
                                label_set, cfg.format),
            ],
        )
        start = time.perf_counter()
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        minutes = (time.perf_counter() - start) / 60
        sharpened = choose_evidence_power(model, collator, dev_ser, label_set, cfg) \
            if cfg.evidence_token and len(cfg.evidence_power_grid) > 1 else {}
        result = evaluate(model, collator, dev, label_set, cfg,
                          [e["label"] for e in train if e["task"] == "ser"])
        calibrated = calibrated_on_dev(model, collator, dev) if cfg.calibrate else {}
        save_speechlm(model, tokenizer, out)
        if (checkpoints / CLASSIFIER_FILE).exists():
            shutil.copy2(checkpoints / CLASSIFIER_FILE, out / CLASSIFIER_FILE)
        if cfg.prosody_token:
            save_stats(out, stats)
        write_task(out, cfg.format, cfg.transcript_source, label_set, params.features.asr,
                   cfg.levels, prosody_caption=cfg.prosody_caption,
                   speech_embedding=params.features.speech_embedding)
        set_label_temperature(out, calibrated.get("label_temperature"))
        summary = {
            "steps": trainer.state.global_step,
            **evidence,
            **sharpened,
            **calibrated,
            "resumed_at_step": int(resume.name.rpartition("-")[2]) if resume else 0,
            "examples": split_summary(train + dev),
            **pretrained,
            **{k: v for k, v in result.items() if k != "samples"},
        }
        (out / "eval.json").write_text(json.dumps({**summary, "samples": result["samples"]},
                                                  indent=2) + "\n")
        summary["train_minutes"] = round(minutes, 2)
        write_run_stats(out, {"train_minutes": summary["train_minutes"]})
        mlflow.log_metrics({"dev_accuracy": result["dev_accuracy"],
                            "dev_accuracy_unknown_speaker": result["dev_accuracy_unknown_speaker"],
                            "dev_well_formed": result["dev_well_formed"],
                            "majority_rate": result["majority_rate"],
                            "train_minutes": minutes,
                            **power_metrics(sharpened),
                            **{k: v for k, v in calibrated.items() if v is not None},
                            **{f"perception_{t}": v for t, v in
                               result.get("perception_accuracy", {}).items()}})
        mlflow.log_table({k: [str(s[k]) for s in result["samples"]]
                          for k in ("utt_id", "label", "predicted", "output")},
                         "dev_generations.json")
    shutil.rmtree(checkpoints)  # the model is saved: nothing left to resume
    print(f"sft: {summary['steps']} steps in {minutes:.1f} min; dev accuracy "
          f"{result['dev_accuracy']:.3f}, speaker unknown "
          f"{result['dev_accuracy_unknown_speaker']:.3f} (majority "
          f"{result['majority_rate']:.3f}), well-formed "
          f"{result['dev_well_formed']:.3f}; perception {result.get('perception_accuracy')}")
    return summary
