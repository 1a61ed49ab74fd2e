"""Prosody measurements against what is known about RAVDESS dev (12 actors, two sentences).

Pitch range: per speaker, the median `f0_range_st` (F0 p95 - p5 in semitones, the features
table's range) of the high-arousal clips (angry, happy, fearful, surprised) against the
low-arousal ones (neutral, calm, sad; disgust is in neither); acted high arousal should have
the wider range for every speaker. Speaking rate: both sentences ("Kids are talking by the door", "Dogs are
sitting by the door") have 7 syllables, so the syllables counted in the audio (voiced
intensity peaks) are compared with 7: mean absolute error, mean signed error and the share
within +-2, per speaker and overall, with the median rate in syllables per second of speech.
The F0 second pass is centred on each speaker's median as in the features stage.
Run: python benchmarks/bench_prosody_ravdess.py [--actors 1 2] [--data DIR]
"""
import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from components.audio_io import read_audio  # noqa: E402
from components.features.prosody import f0_track, measure_prosody  # noqa: E402
from components.features.stage import speaker_medians  # noqa: E402

HIGH_AROUSAL = {"03": "happy", "05": "angry", "06": "fearful", "08": "surprised"}
LOW_AROUSAL = {"01": "neutral", "02": "calm", "04": "sad"}
SENTENCE_SYLLABLES = 7


def clips(root: Path, actors: list[int] | None) -> pd.DataFrame:
    """RAVDESS speech clips (MM-VV-EE-II-SS-RR-AA.wav) with speaker and arousal group."""
    rows = []
    for path in sorted(root.glob("Actor_*/*.wav")):
        parts = path.stem.split("-")
        actor, emotion = int(parts[6]), parts[2]
        if actors and actor not in actors:
            continue
        group = "high" if emotion in HIGH_AROUSAL else "low" if emotion in LOW_AROUSAL else "other"
        rows.append({"utt_id": path.stem, "path": path, "speaker": f"Actor_{actor:02d}",
                     "gender": "M" if actor % 2 else "F", "group": group})
    return pd.DataFrame(rows)


def measure(df: pd.DataFrame) -> pd.DataFrame:
    """f0_range_st, audio syllables and rate of every clip, F0 centred on the speaker median."""
    audio = {row.utt_id: read_audio(row.path, 16000)[0] for row in df.itertuples()}
    medians = []
    for utt_id, samples in audio.items():
        f0 = f0_track(samples, 16000).f0_hz
        medians.append({"utt_id": utt_id,
                        "f0_median_hz": float(np.nanmedian(f0)) if np.isfinite(f0).any() else np.nan})
    per_speaker = speaker_medians(df, medians)
    out = []
    for row in df.itertuples():
        result = measure_prosody(audio[row.utt_id], 16000, None, per_speaker[row.speaker])
        out.append({"f0_range_st": result["f0_range_st"], "syllables": result["syllables"],
                    "rate_sps": result["rate_sps"]})
    return pd.concat([df.reset_index(drop=True), pd.DataFrame(out)], axis=1)


def report(m: pd.DataFrame) -> None:
    m = m.assign(error=m["syllables"] - SENTENCE_SYLLABLES)
    rows = []
    for (speaker, gender), g in m.groupby(["speaker", "gender"]):
        high = g.loc[g["group"] == "high", "f0_range_st"].median()
        low = g.loc[g["group"] == "low", "f0_range_st"].median()
        rows.append({"speaker": speaker, "sex": gender, "range_high_st": high, "range_low_st": low,
                     "diff_st": high - low, "syll_mae": g["error"].abs().mean(),
                     "syll_bias": g["error"].mean(), "within_2": (g["error"].abs() <= 2).mean(),
                     "rate_sps": g["rate_sps"].median()})
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"\npitch range, high - low arousal: min {table['diff_st'].min():.2f} st, median "
          f"{table['diff_st'].median():.2f} st, speakers with high > low: "
          f"{int((table['diff_st'] > 0).sum())}/{len(table)}")
    print(f"audio syllables vs {SENTENCE_SYLLABLES}: MAE {m['error'].abs().mean():.2f}, mean error "
          f"{m['error'].mean():+.2f}, within +-2: {(m['error'].abs() <= 2).mean():.1%} "
          f"({len(m)} clips)")
    print("median rate (syllables/s of speech) by emotion group: "
          + ", ".join(f"{k} {v:.2f}" for k, v in m.groupby("group")["rate_sps"].median().items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get(
        "EMOREASON_SHARED_DATA", REPO.parent / "shared" / "data")) / "ravdess-dev")
    parser.add_argument("--actors", type=int, nargs="*", help="actor numbers (default: all)")
    args = parser.parse_args()
    df = clips(args.data, args.actors)
    if df.empty:
        sys.exit(f"no RAVDESS clips under {args.data}")
    start = time.perf_counter()
    measured = measure(df)
    report(measured)
    print(f"{len(df)} clips in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
