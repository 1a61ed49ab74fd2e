"""`emoreason probe`: which emotion words a follow-up instruction moves the model toward.

For clips of `probe.split`, the model first answers (as served); then, for each instruction
(the self-correction instructions of `inference.instructions` and the opposite pair
`probe.pair`), the final-norm hidden state at the last prompt token of the chat "prompt,
answer, instruction" is compared with the same chat ending in the control follow-up
(`inference.control`). The shift read through the output embedding is each token's logit
change (`components.probe.shift`). Outputs in `probe.out`: `probe.json` (DVC metrics) and
`probe.png`, both logged to the stage's MLflow run.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from components.config import Params
from components.probe.shift import (
    candidate_tokens,
    contrasts,
    emotion_scores,
    emotion_token_ids,
    last_hidden,
    logit_shift,
    paired_test,
    random_z,
    top_tokens,
)


def followup_hidden(predictor, clips: list, answers: list[str], instruction: str,
                    batch_size: int) -> torch.Tensor:
    """[N, H] hidden states at the last token of each clip's chat: prompt, its answer, the
    instruction (filled in with the clip's cues), the assistant header."""
    from components.serve.predictor import followup

    out = []
    for start in range(0, len(clips), batch_size):
        batch = clips[start:start + batch_size]
        histories = [[(a, followup(instruction, c))]
                     for a, c in zip(answers[start:start + batch_size], batch)]
        rows, audio = predictor.chat_inputs(batch, histories)
        out.append(last_hidden(predictor.model, rows, audio, predictor.tokenizer.pad_token_id))
    return torch.cat(out)


@torch.no_grad()
def identity_error(predictor, clips: list) -> float:
    """Largest |W h - logits| at the last prompt token of a few clips: the identity the probe
    rests on, checked on the model probed."""
    from components.serve.predictor import left_pad, padded_positions

    rows, audio = predictor.chat_inputs(clips[:2])
    hidden = last_hidden(predictor.model, rows, audio, predictor.tokenizer.pad_token_id)
    ids, mask = left_pad(rows, predictor.tokenizer.pad_token_id, predictor.device)
    logits = predictor.model(input_ids=ids, attention_mask=mask, **audio,
                             position_ids=padded_positions(mask), logits_to_keep=1).logits[:, -1]
    return float(np.abs(logit_shift(predictor.model, hidden)
                        - logits.float().cpu().numpy()).max())


def probe_results(predictor, clips: list, instructions: dict[str, str], control: str,
                  pair: dict[str, str], target: str, n_random: int, top_k: int,
                  batch_size: int, seed: int) -> dict:
    """The probe's figures (see the module docstring): per instruction the contrasts (mean
    and per clip), z-scores and top tokens; the paired test of `pair` on `target`."""
    labels = predictor.labels
    if target not in labels:
        raise ValueError(f"probe.target {target!r} is not one of the model's labels {labels}")
    if len(pair) != 2:
        raise ValueError(f"probe.pair needs exactly two instructions, got {sorted(pair)}")
    tokenizer = predictor.tokenizer
    first = predictor.predict_clips(clips, rationale=True, batch_size=batch_size, progress=True)
    answers = [r["output"] for r in first]
    token_sets = emotion_token_ids(tokenizer, labels)
    candidates = candidate_tokens(tokenizer)
    reference = followup_hidden(predictor, clips, answers, control, batch_size)
    result: dict = {
        "labels": labels, "n_clips": len(clips),
        "first_labels": {lab: sum(r["label"] == lab for r in first) for lab in labels},
        "token_sets": {e: [tokenizer.decode([i]) for i in ids] for e, ids in token_sets.items()},
        "identity_max_abs_error": identity_error(predictor, clips),
        "instructions": {},
    }
    per_clip = {}
    for name, text in {**instructions, **pair}.items():
        print(f"probe: hidden-state shift of {name!r} on {len(clips)} clips")
        delta = logit_shift(predictor.model,
                            followup_hidden(predictor, clips, answers, text, batch_size)
                            - reference)
        scores = emotion_scores(delta, token_sets)
        per_clip[name] = {"score": scores, "contrast": contrasts(scores)}
        mean_delta = delta.mean(axis=0)
        result["instructions"][name] = {
            "text": text,
            "contrast": {e: float(v.mean()) for e, v in per_clip[name]["contrast"].items()},
            "z": random_z(mean_delta, token_sets, candidates, n_random, seed),
            "top_tokens": top_tokens(tokenizer, mean_delta, top_k),
            "shift_norm": float(np.linalg.norm(delta, axis=1).mean()),
        }
    calm, angry = list(pair)
    result["pair"] = {
        "a": angry, "b": calm, "target": target,
        "contrast": paired_test(per_clip[angry]["contrast"][target],
                                per_clip[calm]["contrast"][target], seed=seed),
        "score": paired_test(per_clip[angry]["score"][target],
                             per_clip[calm]["score"][target], seed=seed),
        "per_clip_contrast_diff": (per_clip[angry]["contrast"][target]
                                   - per_clip[calm]["contrast"][target]).tolist(),
    }
    return result


def probe_png(result: dict, path: Path | str) -> Path:
    """Left: z-scores of each emotion's logit change per instruction (against random token
    sets). Right: per clip, the target's contrast under one instruction of the pair minus
    under the other."""
    from matplotlib.figure import Figure

    from components.evaluate.report import save_figure

    names = list(result["instructions"])
    labels = [e for e in result["labels"] if e in result["instructions"][names[0]]["z"]]
    z = np.array([[result["instructions"][n]["z"][e] for e in labels] for n in names])
    fig = Figure(figsize=(11, 0.6 * len(names) + 3))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1.4]})
    bound = max(3.0, float(np.abs(z).max()))
    image = left.imshow(z, cmap="coolwarm", vmin=-bound, vmax=bound, aspect="auto")
    left.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    left.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(labels)):
            left.text(j, i, f"{z[i, j]:.1f}", ha="center", va="center", fontsize=8)
    fig.colorbar(image, ax=left, label="z against random token sets")
    left.set_title("logit change of emotion words vs the control follow-up")
    pair = result["pair"]
    diff = np.array(pair["per_clip_contrast_diff"])
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(diff))
    right.scatter(jitter, diff, s=12, alpha=0.6)
    right.axhline(0, color="grey", lw=1)
    right.errorbar([0.4], [pair["contrast"]["mean"]],
                   yerr=[[pair["contrast"]["mean"] - pair["contrast"]["ci"][0]],
                         [pair["contrast"]["ci"][1] - pair["contrast"]["mean"]]],
                   fmt="o", color="black", capsize=4)
    right.set_xticks([])
    right.set_title(f"{pair['target']} contrast: {pair['a']} \u2212 {pair['b']}\n"
                    f"Wilcoxon p = {pair['contrast']['wilcoxon_p']:.3g}", fontsize=9)
    return save_figure(fig, path)


def run_probe(params: Params, out: Path, model: str | None = None) -> dict:
    """Probe `model` (default `probe.model`) on `probe.split`; write probe.json and
    probe.png; log them to MLflow."""
    import mlflow

    from components.config import as_dict
    from components.evaluate.stage import evaluation_rows
    from components.evaluate.systems import predictor_clips
    from components.tracking import stage_run

    cfg = params.probe
    folder = Path(model or cfg.model)
    _, rows, meta = evaluation_rows(cfg.features, cfg.manifest, cfg.split, cfg.max_clips)
    predictor, clips = predictor_clips(folder, rows, Path(cfg.features).parent / "frames",
                                       meta.data_root, cfg.max_new_tokens, params.base.device,
                                       params.inference)
    if predictor.text_only:
        raise ValueError(f"{folder} is a text-only model; the probe reads a SpeechLM")
    result = probe_results(predictor, clips, params.inference.instructions,
                           params.inference.control, cfg.pair, cfg.target, cfg.n_random,
                           cfg.top_k, cfg.batch_size, params.base.seed)
    result = {"model": str(folder), "corpus": meta.corpus, "split": cfg.split, **result}
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps(result, indent=2) + "\n")
    probe_png(result, out / "probe.png")
    with stage_run("probe", params.tracking, {"probe": as_dict(cfg)}):
        for name, entry in result["instructions"].items():
            mlflow.log_metrics({f"z/{name}/{e}": v for e, v in entry["z"].items()})
            mlflow.log_metrics({f"contrast/{name}/{e}": v for e, v in entry["contrast"].items()})
        pair = result["pair"]["contrast"]
        mlflow.log_metrics({"pair/contrast_diff": pair["mean"], "pair/wilcoxon_p":
                            pair["wilcoxon_p"], "pair/share_positive": pair["share_positive"],
                            "identity_max_abs_error": result["identity_max_abs_error"]})
        mlflow.log_artifact(str(out / "probe.json"))
        mlflow.log_artifact(str(out / "probe.png"))
    pair = result["pair"]
    print(f"probe: {pair['target']} contrast, {pair['a']} - {pair['b']}: "
          f"{pair['contrast']['mean']:+.3f} [{pair['contrast']['ci'][0]:+.3f}, "
          f"{pair['contrast']['ci'][1]:+.3f}], higher in {pair['contrast']['share_positive']:.0%} "
          f"of {pair['contrast']['n']} clips, Wilcoxon p = {pair['contrast']['wilcoxon_p']:.3g}")
    print(f"probe: {out / 'probe.json'}, {out / 'probe.png'}")
    return result
