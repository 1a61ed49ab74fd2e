"""Serving benchmark on a 4-second clip: what a client waits, what batching buys, and what the
SpeechLM's generation costs next to stock transformers.

Side by side in one run, printed as one table with ratios:
- REST latency p50/p95 and throughput at 1 and 4 concurrent clients against a
  `mlflow models serve` of the model (logged to a throwaway MLflow store), or against the
  pyfunc in this process with `--in-process`; and p50 at 1 client of the label-only request
  (`"params": {"rationale": false}`) and of both requests with the client's transcript;
- `predict_audio` on 8 clips: batched (batch 8) against one clip at a time;
- label and probabilities only (`rationale=False`) against the full answer, p50, with the
  model's speech recognition and with a transcript the client sends (no recognition), and
  label-only without the prompt-prefix cache of the scoring pass, and the full answer with
  the labels scored in a pass of their own before the rationale's generation;
- generation tokens/s at batch 1: the SpeechLM (audio in the prompt) against stock
  `AutoModelForCausalLM.generate` on the same LM with a text prompt of the same length.

Run: python benchmarks/bench_serve.py [--model models/sft] [--clip SPEECH.wav] [--in-process]
[--quick]
(`make demo` first for the default model folder; `--quick` checks the script in a minute).
"""
import argparse
import base64
import io
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TQDM_DISABLE", "1")  # per-clip progress bars would bury the table

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402
from mlflow.pyfunc import PythonModelContext  # noqa: E402

from components.config import InferenceConfig, load_params  # noqa: E402
from components.serve.pyfunc import EmoReasonModel, example_wav  # noqa: E402
from components.serve.rest import start_model_server, stop_model_server  # noqa: E402
from components.serve.torch_thread import on_torch_thread  # noqa: E402

CLIP_S = 4.0
GIVEN = "kids are talking by the door"
"""The transcript a client with its own speech recognition sends."""


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


_TIMED: list[np.ndarray] = []
"""The clip every latency is measured on, once `use_clip` has chosen a speech file."""


def use_clip(path: Path) -> None:
    """Time the speech in `path` (16 kHz mono, cut or padded with silence to `CLIP_S`) instead
    of the synthetic voiced glide, in which a recogniser finds few or no words."""
    from components.audio_io import read_audio

    audio = read_audio(path, 16000)[0][: int(CLIP_S * 16000)]
    _TIMED[:] = [np.pad(audio, (0, int(CLIP_S * 16000) - len(audio)))]


def clip_audio() -> np.ndarray:
    if _TIMED:
        return _TIMED[0]
    return sf.read(io.BytesIO(example_wav(CLIP_S)), dtype="float32")[0]


def clip_b64() -> str:
    buf = io.BytesIO()
    sf.write(buf, clip_audio(), 16000, format="WAV", subtype="PCM_16")
    return base64.b64encode(buf.getvalue()).decode("ascii")


# ------------------------------------------------------------------ clients
def run_clients(call, clients: int, requests: int) -> tuple[list[float], float]:
    """(per-request latencies, wall seconds) of `clients` threads each making `requests`
    sequential calls."""
    latencies: list[float] = []
    lock = threading.Lock()

    def client() -> None:
        for _ in range(requests):
            start = time.perf_counter()
            call()
            took = time.perf_counter() - start
            with lock:
                latencies.append(took)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    return latencies, time.perf_counter() - start


def request_frame(transcript: str | None) -> pd.DataFrame:
    """One 4-second clip, with the transcript a client sends (None: the model recognises it)."""
    frame = pd.DataFrame({"audio": [clip_b64()]})
    if transcript is not None:
        frame["transcript"] = [transcript]
    return frame


def request_body(transcript: str | None, rationale: bool) -> bytes:
    """The JSON of a REST request for `request_frame(transcript)`; `rationale` false asks for
    label and probabilities only."""
    frame = request_frame(transcript)
    return json.dumps({"dataframe_split": frame.to_dict(orient="split", index=False),
                       "params": {"rationale": rationale}}).encode()


def rest_caller(url: str, body: bytes):
    def call() -> None:
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=600) as response:
            answer = json.loads(response.read())["predictions"][0]
        if answer["error"]:
            raise RuntimeError(f"the server answered with an error: {answer['error']}")
    return call


# ------------------------------------------------------------------ in-process measurements
def batching(predictor, n: int) -> tuple[float, float]:
    """(seconds for `n` clips one at a time, seconds for the same clips in one batch)."""
    clips = [clip_audio() * (0.6 + 0.05 * i) for i in range(n)]
    start = time.perf_counter()
    for clip in clips:
        predictor.predict_audio([clip], batch_size=1)
    alone = time.perf_counter() - start
    start = time.perf_counter()
    predictor.predict_audio(clips, batch_size=n)
    return alone, time.perf_counter() - start


def label_only(predictor, repeats: int, transcript: str | None = None) -> tuple[float, float]:
    """p50 seconds of one clip: label + probabilities only, and the full answer; with a
    client's `transcript`, speech recognition is skipped."""
    clip, given = clip_audio(), [transcript]
    fast = [timed(lambda: predictor.predict_audio([clip], rationale=False, transcripts=given))
            for _ in range(repeats)]
    full = [timed(lambda: predictor.predict_audio([clip], transcripts=given))
            for _ in range(repeats)]
    return statistics.median(fast), statistics.median(full)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@torch.no_grad()
def generation(predictor, new_tokens: int, repeats: int) -> tuple[float, float, int]:
    """(SpeechLM tokens/s, stock transformers tokens/s, prompt tokens) at batch 1, both
    forced to generate exactly `new_tokens` greedily."""
    from transformers import AutoModelForCausalLM

    from components.models.bundled import resolve_model
    from components.speechlm.encoders import n_audio_tokens
    from components.speechlm.formats import build_prompt
    from components.speechlm.io import MERGED_LM_DIR
    from components.speechlm.zeroshot import text_prompt

    model, tokenizer, task = predictor.model, predictor.tokenizer, predictor.task
    config = model.config
    audio = clip_audio()
    clip = predictor.measure_audio([audio])[0]
    inputs: dict = {}
    if task.get("inputs", "audio") == "text":
        messages = text_prompt(clip.transcript, clip.caption, task["format"], task["labels"],
                               config.audio_token)
    else:
        values, mask = model.featurize([audio])
        inputs = {"audio_values": values, "audio_mask": mask}
        if config.prosody_dim:
            inputs["prosody_values"] = torch.from_numpy(np.asarray(clip.prosody)[None])
        messages = build_prompt("ser", task["format"], task["transcript_source"],
                                clip.transcript, task["labels"],
                                n_audio_tokens(config, int(mask.sum())), config.audio_token)
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    settings = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False,
                "pad_token_id": tokenizer.pad_token_id}

    def speechlm() -> None:
        model.generate(**ids, **inputs, **settings)

    # the LM as stored (a predictor may have merged an adapter folder's LoRA in memory)
    lm_path = predictor.folder / MERGED_LM_DIR
    if not lm_path.is_dir():
        lm_path = resolve_model(config.lm_name_or_path)
    stock = AutoModelForCausalLM.from_pretrained(str(lm_path), dtype=torch.float32).eval()
    filler = tokenizer(" a", add_special_tokens=False)["input_ids"][0]
    text_ids = ids["input_ids"].masked_fill(ids["input_ids"] == config.audio_token_id, filler)

    def plain() -> None:
        stock.generate(input_ids=text_ids, attention_mask=ids["attention_mask"], **settings)

    rates = []
    for fn in (speechlm, plain):
        fn()  # warm-up
        took = sum(timed(fn) for _ in range(repeats))
        rates.append(new_tokens * repeats / took)
    return rates[0], rates[1], int(ids["input_ids"].shape[1])


def agreement_clips(n: int, manifest: Path) -> list[np.ndarray]:
    """Up to `n` test clips of `manifest` (spread over the split), else, without one, variants
    of the synthetic clip: the clips on which each dtype's labels are compared with float32's."""
    from components.audio_io import read_audio
    from components.paths import resolve_audio_path
    from components.prepare.schema import read_manifest
    from components.speechlm.sft_data import spread

    if not manifest.exists():
        return [clip_audio() * (0.4 + 0.1 * i) for i in range(min(n, 6))]
    df, meta = read_manifest(manifest)
    test = df[df["split"] == "test"]
    test = test.iloc[spread(len(test), n)]
    return [read_audio(resolve_audio_path(p, meta.data_root), 16000)[0]
            for p in test["audio_path"]]


ANSWERED_CLIPS = 8
"""Clips whose full answers each dtype writes (the rest are scored for the label only)."""


def dtypes(folder: Path, new_tokens: int, repeats: int, clips: list[np.ndarray],
           served: InferenceConfig) -> list[tuple]:
    """Per serving dtype: generation tokens/s at batch 1, full-answer p50 on the 4 s clip, how
    often its label agrees with float32's on `clips` (labels from scoring), and, on the first
    `ANSWERED_CLIPS` of them, the share of well-formed full answers and their mean length in
    tokens (a full answer's time is its length times the time per token: a faster dtype whose
    answers run on to the token limit is no faster); decoded as `served` says."""
    from components.serve.predictor import DTYPES, load_predictor

    rows, reference, base, measured = [], None, None, None
    for dtype in DTYPES:
        predictor = load_predictor(folder, dtype=dtype, repeat_block=served.repeat_block,
                                   claim_guard=served.claim_guard)
        rate, _, _ = generation(predictor, new_tokens, repeats)
        _, full = label_only(predictor, repeats)
        if measured is None:  # transcripts, cues and frames do not depend on the dtype
            measured = predictor.measure_audio(clips)
        labels = [r["label"] for r in predictor.predict_clips(measured, rationale=False)]
        answers = predictor.predict_clips(measured[:ANSWERED_CLIPS])
        formed = sum(r["well_formed"] for r in answers) / len(answers)
        length = statistics.mean(len(predictor.tokenizer(r["output"], add_special_tokens=False)
                                     ["input_ids"]) for r in answers)
        if reference is None:
            reference, base = labels, (rate, full, length)
        agree = sum(a == b for a, b in zip(labels, reference)) / len(labels)
        rows += [(f"{dtype}: generation, batch 1 (tokens/s)", rate, "float32: ratio",
                  rate / base[0]),
                 (f"{dtype}: full answer p50 (s)", full, "float32: ratio", full / base[1]),
                 (f"{dtype}: label agreement with float32", agree,
                  f"on {len(labels)} clips", None),
                 (f"{dtype}: well-formed full answers", formed, f"on {len(answers)} clips", None),
                 (f"{dtype}: tokens per full answer", length, "float32: ratio",
                  length / base[2])]
    return rows


# ------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "models" / "sft"),
                        help="a model folder (default models/sft)")
    parser.add_argument("--in-process", action="store_true",
                        help="call the pyfunc in this process instead of a REST server")
    parser.add_argument("--requests", type=int, default=8, help="requests per client")
    parser.add_argument("--workers", type=int, default=1, help="server workers (REST)")
    parser.add_argument("--dtype", default="float32",
                        help="the served model's weights: float32, bfloat16 or int8")
    parser.add_argument("--agreement-clips", type=int, default=40,
                        help="clips on which each dtype's labels are compared with float32's")
    parser.add_argument("--manifest", type=Path,
                        default=REPO / "data" / "gated" / "manifest.parquet",
                        help="whose test clips those are (default the pipeline's gated manifest; "
                             "without one, 6 variants of the synthetic clip)")
    parser.add_argument("--clip", type=Path,
                        help="a speech file to time, cut or padded to 4 s (default: a synthetic "
                             "voiced glide, in which speech recognition finds few words)")
    parser.add_argument("--quick", action="store_true",
                        help="a few requests and tokens: checks the script, not the numbers")
    args = parser.parse_args()
    served = load_params(REPO / "params.yaml").inference  # decode as served
    folder = Path(args.model)
    if not (folder / "task.json").exists():
        sys.exit(f"{folder} is not a model folder (no task.json): run `make demo` or pass --model")
    requests, repeats, new_tokens = (2, 1, 8) if args.quick else (args.requests, 5, 64)
    if args.clip:
        use_clip(args.clip)
    clips = agreement_clips(4 if args.quick else args.agreement_clips, args.manifest)
    rows: list[tuple[str, float, str, float | None]] = []

    pyfunc = EmoReasonModel()
    config = {"max_duration_s": 60.0, "batch_size": 8, "dtype": args.dtype,
              "repeat_block": served.repeat_block, "claim_guard": served.claim_guard}
    pyfunc.load_context(PythonModelContext({"model": str(folder)}, config))
    predictor = pyfunc.predictor
    # the requests a client makes: (transcript it sends, rationale wanted)
    kinds = {"full answer": (None, True), "label only": (None, False),
             "label only, client's transcript": (GIVEN, False),
             "full answer, client's transcript": (GIVEN, True)}

    with tempfile.TemporaryDirectory() as tmp:
        server = None
        if args.in_process:
            where = "in-process pyfunc"

            def caller(transcript: str | None, rationale: bool):
                frame = request_frame(transcript)

                def call() -> None:
                    out = pyfunc.predict(None, frame, {"rationale": rationale})
                    if out["error"].iloc[0]:
                        raise RuntimeError(out["error"].iloc[0])
                return call
        else:
            import mlflow

            from components.serve.pyfunc import log_pyfunc

            env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{Path(tmp) / 'mlflow.db'}"}
            mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
            experiment = mlflow.create_experiment("bench-serve", (Path(tmp) / "art").as_uri())
            with mlflow.start_run(experiment_id=experiment):
                info = log_pyfunc(folder, "model", max_duration_s=60.0, batch_size=8,
                                  dtype=args.dtype, repeat_block=served.repeat_block,
                                  claim_guard=served.claim_guard)
            server, port = start_model_server(info.model_uri, env, Path(tmp) / "server.log",
                                              workers=args.workers, request_timeout_s=600,
                                              wait_s=600)
            where = f"mlflow models serve, {args.workers} worker(s)"
            url = f"http://127.0.0.1:{port}/invocations"

            def caller(transcript: str | None, rationale: bool):
                return rest_caller(url, request_body(transcript, rationale))
        try:
            call = caller(*kinds["full answer"])
            call()  # warm-up
            serving = {c: run_clients(call, c, requests) for c in (1, 4)}
            one_client = {kind: run_clients(caller(*how), 1, requests)[0]
                          for kind, how in kinds.items() if kind != "full answer"}
        finally:
            if server is not None:
                stop_model_server(server)

    one, four = serving[1], serving[4]
    tput = {c: len(lat) / wall for c, (lat, wall) in serving.items()}
    rows += [
        ("latency p50, 1 client (s)", percentile(one[0], 50), "", None),
        ("latency p95, 1 client (s)", percentile(one[0], 95), "", None),
        ("latency p50, 4 clients (s)", percentile(four[0], 50), "1 client p50",
         percentile(four[0], 50) / percentile(one[0], 50)),
        ("latency p95, 4 clients (s)", percentile(four[0], 95), "1 client p95",
         percentile(four[0], 95) / percentile(one[0], 95)),
        ("throughput, 1 client (clips/s)", tput[1], "", None),
        ("throughput, 4 clients (clips/s)", tput[4], "1 client", tput[4] / tput[1]),
    ]
    rows += [(f"latency p50, 1 client, {kind} (s)", percentile(lat, 50), "full answer p50",
              percentile(lat, 50) / percentile(one[0], 50)) for kind, lat in one_client.items()]
    # torch work on the thread that loaded the model, as served (components.serve.torch_thread)
    alone, batched = on_torch_thread(batching, predictor, 8)
    rows.append(("predict_audio, 8 clips batched (s)", batched, "one by one: speed-up",
                 alone / batched))
    fast, full = on_torch_thread(label_only, predictor, repeats)
    rows.append(("label + probabilities only, p50 (s)", fast, "with rationale: speed-up",
                 full / fast))
    given_fast, given_full = on_torch_thread(label_only, predictor, repeats, GIVEN)
    predictor.prefix_cache = False
    whole_fast, _ = on_torch_thread(label_only, predictor, repeats, GIVEN)
    predictor.prefix_cache = True
    predictor.score_in_generate = False
    _, apart_full = on_torch_thread(label_only, predictor, repeats, GIVEN)
    predictor.score_in_generate = True
    rows += [("label only, client's transcript, p50 (s)", given_fast, "with recognition: speed-up",
              fast / given_fast),
             ("... without the prompt-prefix cache (s)", whole_fast, "prefix cache: speed-up",
              whole_fast / given_fast),
             ("full answer, client's transcript, p50 (s)", given_full,
              "with recognition: speed-up", full / given_full),
             ("... labels scored in a pass of their own (s)", apart_full,
              "scored in generate: speed-up", apart_full / given_full)]
    ours, stock, prompt = on_torch_thread(generation, predictor, new_tokens, repeats)
    rows.append(("generation, batch 1 (tokens/s)", ours, "stock generate: ratio",
                 ours / stock))
    rows += on_torch_thread(dtypes, folder, new_tokens, repeats, clips, served)

    print(f"\nserving benchmark: {folder} ({args.dtype}), {CLIP_S:g} s clip "
          f"({args.clip or 'synthetic glide'}), {where}, "
          f"{torch.get_num_threads()} torch threads{', QUICK' if args.quick else ''}")
    print(f"generation: {new_tokens} new tokens after a {prompt}-token prompt; stock "
          f"transformers: {stock:.1f} tokens/s; one by one: {alone:.2f} s for 8 clips; "
          f"full answer p50: {full:.2f} s")
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>9}  {'compared with':<26} {'ratio':>6}")
    for name, value, other, ratio in rows:
        print(f"{name:<{width}}  {value:>9.3f}  {other:<26} "
              f"{'' if ratio is None else f'{ratio:6.2f}'}")


if __name__ == "__main__":
    main()
