"""Speaker-independent train/dev/test splits, deterministic for a seed.

A speaker's clips all go to one split, since voices differ more between speakers than between
emotions: a model tested on a seen voice overstates what it will do on a new one.
"""
import numpy as np

from components.config import SplitConfig


def _split_counts(n: int, cfg: SplitConfig) -> tuple[int, int]:
    """(n_dev, n_test) for a group of n speakers; dev and test get at least one when n >= 3."""
    total = cfg.train + cfg.dev + cfg.test
    n_test = int(round(n * cfg.test / total))
    n_dev = int(round(n * cfg.dev / total))
    if n >= 3:
        n_test = max(n_test, 1 if cfg.test > 0 else 0)
        n_dev = max(n_dev, 1 if cfg.dev > 0 else 0)
    while n_test + n_dev >= n and n_test + n_dev > 0 and n > 0:
        if n_dev >= n_test and n_dev > 0:
            n_dev -= 1
        else:
            n_test -= 1
    return n_dev, n_test


def assign_speaker_splits(
    speaker_gender: dict[str, str], cfg: SplitConfig, seed: int
) -> dict[str, str]:
    """Map each speaker to 'train', 'dev' or 'test'; within each gender when `cfg.by_gender`.

    Speakers named in `cfg.test_speakers` / `cfg.dev_speakers` go there (speaker-fold
    cross-validation); the others are drawn by the ratios, dev only when no dev list is given.
    """
    for name in ("train", "dev", "test"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"prepare.split.{name} must not be negative")
    if cfg.train <= 0:
        raise ValueError("prepare.split.train must be positive")
    fixed = {**{s: "dev" for s in cfg.dev_speakers}, **{s: "test" for s in cfg.test_speakers}}
    both = sorted(set(cfg.dev_speakers) & set(cfg.test_speakers))
    if both:
        raise ValueError(f"prepare.split: speakers {both} are in both test_speakers and dev_speakers")
    unknown = sorted(set(fixed) - set(speaker_gender))
    if unknown:
        raise ValueError(f"prepare.split: speakers {unknown} are not in the corpus "
                         f"(it has {sorted(speaker_gender)[:6]}...)")
    if fixed:
        cfg = SplitConfig(train=cfg.train, dev=0.0 if cfg.dev_speakers else cfg.dev, test=0.0,
                          by_gender=cfg.by_gender)
    groups: dict[str, list[str]] = {}
    for speaker in sorted(set(speaker_gender) - set(fixed)):
        key = speaker_gender[speaker] if cfg.by_gender else "all"
        groups.setdefault(key, []).append(speaker)
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for key in sorted(groups):
        speakers = list(groups[key])
        rng.shuffle(speakers)
        n_dev, n_test = _split_counts(len(speakers), cfg)
        for i, speaker in enumerate(speakers):
            assignment[speaker] = "test" if i < n_test else "dev" if i < n_test + n_dev else "train"
    return {**assignment, **fixed}
