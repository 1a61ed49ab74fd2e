"""SFT benchmark: training throughput (samples/s, tokens/s) and peak memory of the default
SpeechLM (bundled SmolLM2-135M + LoRA, frames encoder) on this machine, the encoder warm-up's
time per epoch, and generation speed at batch 1 and batch 8.

Uses the demo pipeline's outputs (run `make demo` first).
Run: python benchmarks/bench_sft.py [--steps 4]
"""
import argparse
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402

from components.config import load_params  # noqa: E402
from components.speechlm.collate import AudioSource, SpeechCollator  # noqa: E402
from components.speechlm.io import build_speechlm  # noqa: E402
from components.speechlm.pretrain import pretrain_encoder  # noqa: E402
from components.speechlm.prosody_vector import PROSODY_DIM, population_stats  # noqa: E402
from components.speechlm.sft_data import labelled_clips  # noqa: E402
from components.speechlm.train import generate, make_optimizer, sft_examples  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    params = load_params(REPO / "params.yaml")
    cfg = params.sft
    for name in ("features", "frames", "manifest", "rationales"):
        setattr(cfg, name, str(REPO / getattr(cfg, name)))
    if not Path(cfg.rationales).exists():
        sys.exit("run `make demo` first: the distill outputs are missing")
    train, dev, manifest, labels, root = sft_examples(cfg, params.base.seed)
    model, tokenizer = build_speechlm(cfg.lm, encoder=cfg.encoder,
                                      tokens_per_second=cfg.tokens_per_second,
                                      prosody_dim=PROSODY_DIM if cfg.prosody_token else 0)
    features = pd.read_parquet(cfg.features)
    source = AudioSource.from_features(model, cfg.frames, manifest, root,
                                       {e["utt_id"] for e in train + dev}, features,
                                       population_stats(features, {e["utt_id"] for e in train}))
    collator = SpeechCollator(tokenizer, source, labels)
    start = time.perf_counter()
    pretrain_encoder(model, source.batch, labelled_clips(train), [], labels, 1,
                     cfg.encoder_pretrain_learning_rate)
    epoch = time.perf_counter() - start
    print(f"encoder warm-up: {epoch:.1f} s/epoch, {cfg.encoder_pretrain_epochs} epochs: "
          f"{cfg.encoder_pretrain_epochs * epoch / 60:.1f} min")
    optimizer = make_optimizer(model, cfg)
    model.train()
    batches = [collator(train[i * cfg.batch_size:(i + 1) * cfg.batch_size])
               for i in range(args.steps + 1)]
    timings, tokens = [], []
    for i, batch in enumerate(batches):
        start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if i:  # the first step warms up
            timings.append(time.perf_counter() - start)
            tokens.append(int(batch["attention_mask"].sum()))
    step = sum(timings) / len(timings)
    print(f"training, batch {cfg.batch_size}: {step:.1f} s/step, "
          f"{cfg.batch_size / step:.2f} samples/s, {sum(tokens) / sum(timings):.0f} tokens/s, "
          f"{sum(tokens) / len(tokens) / cfg.batch_size:.0f} tokens per sample")
    epoch_steps = -(-len(train) // cfg.batch_size)
    print(f"one demo epoch ({len(train)} examples, {epoch_steps} steps): "
          f"{epoch_steps * step / 60:.1f} min; {cfg.epochs} epochs: "
          f"{cfg.epochs * epoch_steps * step / 60:.1f} min")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak:.0f} MiB")
    ser = [e for e in dev if e["task"] == "ser"][:8]
    model.eval()
    for batch_size in (1, 8):
        start = time.perf_counter()
        texts = generate(model, collator, ser, max_new_tokens=64, batch_size=batch_size)
        took = time.perf_counter() - start
        n = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
        print(f"generation, batch {batch_size}: {n / took:.1f} tokens/s "
              f"({len(ser)} clips in {took:.1f} s)")


if __name__ == "__main__":
    main()
