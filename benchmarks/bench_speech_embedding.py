"""What a pretrained speech encoder's clip embedding knows about emotion on unseen speakers,
beside the eGeMAPS baseline and the SpeechLM, on the folds of a finished `bench_quality.py` run.

The embedding is Moonshine base-en's encoder output (the default transcriber's, already run
at serving to transcribe), mean- and std-pooled over time: 832 numbers per clip. It is scored
with the project's own baseline procedure (`components.evaluate.baselines.egemaps_lr`:
class-balanced logistic regression fitted on train, C chosen on dev UA), standardised globally
(`moonshine_lr_global`) or z-normalised per speaker as the features stage normalises eGeMAPS
(`moonshine_lr_speaker`). `ensemble_3` is the mean of the probabilities of `encoder`,
`egemaps_lr_speaker` and `moonshine_lr_speaker`: an estimate of the SpeechLM's evidence token
with the embedding as a third member (today it averages the first two).

Printed per fold and pooled over the folds (every clip scored once as a test clip), with 95%
bootstrap intervals and the evaluation's paired p-values.

Run: python benchmarks/bench_speech_embedding.py --work <bench_quality work folder> [--folds 0 1 2]
"""
import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from tqdm import tqdm  # noqa: E402

from bench_quality import fold_predictions  # noqa: E402
from components.audio_io import read_audio  # noqa: E402
from components.config import load_params  # noqa: E402
from components.evaluate.baselines import egemaps_lr  # noqa: E402
from components.evaluate.stage import score_systems, table_lines  # noqa: E402
from components.features.moonshine import MoonshineDecoder, pooled_embedding  # noqa: E402
from components.features.stage import normalise_egemaps  # noqa: E402
from components.paths import resolve_audio_path  # noqa: E402
from components.prepare.schema import read_manifest  # noqa: E402

SHOWN = ("egemaps_lr_speaker", "encoder", "sft", "moonshine_lr_global", "moonshine_lr_speaker",
         "ensemble_3")


def embeddings(manifest: pd.DataFrame, root: Path, decoder: MoonshineDecoder,
               known: dict[str, np.ndarray]) -> None:
    """Adds to `known` the mean+std pooled encoder states of the manifest's clips it lacks."""
    todo = manifest[~manifest["utt_id"].isin(known)]
    for row in tqdm(todo.itertuples(), total=len(todo), desc="embeddings", disable=todo.empty):
        audio = read_audio(resolve_audio_path(row.audio_path, root), 16000)[0]
        known[row.utt_id] = pooled_embedding(decoder, audio)


def fold_systems(folder: Path, known: dict[str, np.ndarray], decoder: MoonshineDecoder):
    """(gold rows, system -> predictions, cues, labels) of a fold, the embedding systems added."""
    gold, systems, cues, labels = fold_predictions(folder)
    params = load_params(folder / "params.yaml")
    manifest, meta = read_manifest(folder / params.evaluate.manifest)
    embeddings(manifest, meta.data_root, decoder, known)
    rows = manifest[["utt_id", "split", "label", "speaker", "corpus", "gender"]].copy()
    rows["moonshine"] = [known[u].tolist() for u in rows["utt_id"]]
    # the features stage's per-speaker z-normalisation, applied to the embedding
    rows["moonshine_spknorm"] = normalise_egemaps(rows.assign(egemaps=rows["moonshine"]))
    cfg = params.evaluate
    for name, column in (("moonshine_lr_global", "moonshine"),
                         ("moonshine_lr_speaker", "moonshine_spknorm")):
        systems[name], _ = egemaps_lr(rows, column, labels, cfg.lr_c_grid, params.base.seed)
    members = [systems[n].set_index("utt_id").loc[systems["moonshine_lr_speaker"]["utt_id"]]
               for n in ("encoder", "egemaps_lr_speaker", "moonshine_lr_speaker")]
    mean = np.mean([[[p[label] for label in labels] for p in m["probabilities"]]
                    for m in members], axis=0)
    systems["ensemble_3"] = pd.DataFrame({
        "utt_id": systems["moonshine_lr_speaker"]["utt_id"],
        "label": [labels[i] for i in mean.argmax(1)],
        "probabilities": [dict(zip(labels, map(float, p))) for p in mean]})
    return gold, systems, cues, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True,
                        help="a finished bench_quality.py work folder (fold0, fold1, ...)")
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()
    decoder, known = MoonshineDecoder(), {}
    golds, preds, cues, labels = [], {}, {}, None
    for k in args.folds:
        gold, systems, fold_cues, labels = fold_systems(args.work / f"fold{k}", known, decoder)
        cfg = load_params(args.work / f"fold{k}" / "params.yaml").evaluate
        cfg.n_boot = args.n_boot
        scored = score_systems(gold, {n: systems[n] for n in SHOWN}, labels, fold_cues, cfg, 0)
        print(f"\n== fold {k}")
        print("\n".join(table_lines(scored["systems"])))
        golds.append(gold)
        cues.update(fold_cues)
        for name in SHOWN:
            preds.setdefault(name, []).append(systems[name])
    pooled = score_systems(pd.concat(golds, ignore_index=True),
                           {n: pd.concat(p, ignore_index=True) for n, p in preds.items()},
                           labels, cues, cfg, seed=0)
    print(f"\n== pooled over folds {args.folds} ({sum(map(len, golds))} clips)")
    print("\n".join(table_lines(pooled["systems"])))
    for test in pooled["pvalues"]:
        print(f"paired bootstrap {test['a']} vs {test['b']} on {test['metric']}: "
              f"{test['a_value']:.3f} vs {test['b_value']:.3f}, p = {test['p']:.3f}")


if __name__ == "__main__":
    main()
