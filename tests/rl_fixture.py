"""RL params over the tiny SFT pipeline (tests.sft_fixture), a reward that varies
between completions of a random LM, so a step has advantages to follow, and a spy on the
backbone's audio forwards."""
from pathlib import Path

from components.config import Params

SPREAD = "tests.rl_fixture:spread_reward"
"""`rl.rewards` key of `spread_reward` (a module:function reward)."""


def spread_reward(prompts, completions, **columns):
    """A reward that differs between completions (a tiny random LM writes no valid output)."""
    return [float(sum(map(ord, str(c))) % 7) for c in completions]


def tiny_rl_params(root: Path, sft_folder: Path, tmp_path: Path) -> Params:
    """One GRPO step of 2 prompts x 2 completions of 6 tokens on 6 training clips."""
    params = Params()
    rl = params.rl
    rl.sft, rl.out = str(sft_folder), str(tmp_path / "rl")
    rl.features = str(root / "features" / "features.parquet")
    rl.frames = str(root / "features" / "frames")
    rl.manifest = str(root / "manifest.parquet")
    rl.checkpoint_dir = str(tmp_path / "checkpoints")
    rl.num_generations, rl.prompts_per_step, rl.max_new_tokens = 2, 2, 6
    rl.max_steps, rl.save_steps, rl.max_clips = 1, 1, 6
    params.tracking.tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return params


def spy_audio_forwards(model) -> list[tuple]:
    """Record (input_ids device, audio_values device or None) for every backbone forward of
    `model` whose input holds audio placeholders; returns the list it fills."""
    audio_id = model.config.audio_token_id
    seen: list[tuple] = []

    def spy(module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and (ids == audio_id).any():
            audio = kwargs.get("audio_values")
            seen.append((ids.device, None if audio is None else audio.device))

    model.model.register_forward_pre_hook(spy, with_kwargs=True)
    return seen
