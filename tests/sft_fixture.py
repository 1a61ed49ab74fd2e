"""A tiny demo pipeline (manifest, features with frame shards and levels, template
rationales) and a tiny SpeechLM trained on it, shared by the SFT, prediction and evaluation
tests (session-scoped: built once)."""
import pytest
import torch

from components.config import FeaturesConfig, Params, SplitConfig
from components.distill.cache import GenerationCache
from components.distill.stage import distill, load_cues, write_records
from components.distill.template import TemplateTeacher
from components.features.levels import save_levels
from components.features.stage import build_features
from tests.demo_fixture import demo_manifest
from tests.tiny_models import save_tiny_lm


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory):
    """Manifest, features (with frame shards) and template rationales for 32 demo clips."""
    root = tmp_path_factory.mktemp("sft")
    df, meta = demo_manifest(root, 32, 8, 5, SplitConfig(train=0.5, dev=0.25, test=0.25))
    feats, levels = build_features(df, root / "audio", FeaturesConfig(
        workers=1, cache_dir=str(root / "cache")), root / "features")
    feats.to_parquet(root / "features" / "features.parquet", index=False)
    save_levels(root / "features" / "levels.json", levels)
    cues = load_cues(root / "features" / "features.parquet", root / "manifest.parquet", ["train"])
    records, _ = distill(cues, Params().distill, [TemplateTeacher()],
                         GenerationCache(root / "gen.jsonl"))
    write_records(records, root / "rationales.jsonl")
    return root, df, feats, records, list(meta.labels), save_tiny_lm(root / "tiny_lm")


def sft_params(root, tiny) -> Params:
    """Params whose sft section points at the tiny pipeline and LM (3 steps)."""
    params = Params()
    params.sft.features = str(root / "features" / "features.parquet")
    params.sft.frames = str(root / "features" / "frames")
    params.sft.manifest = str(root / "manifest.parquet")
    params.sft.rationales = str(root / "rationales.jsonl")
    params.sft.levels = str(root / "features" / "levels.json")
    params.sft.lm = str(tiny)
    params.sft.max_steps, params.sft.batch_size, params.sft.eval_clips = 3, 4, 4
    params.sft.max_target_words, params.sft.encoder_pretrain_epochs = 20, 2
    params.sft.lora_r, params.sft.lora_alpha = 4, 8
    params.sft.checkpoint_dir = str(root / "checkpoints")
    return params


@pytest.fixture(scope="session")
def trained(pipeline, tmp_path_factory):
    """A tiny SpeechLM folder trained for 3 steps (with its warmed-up encoder classifier)."""
    from components.speechlm.train import train_sft

    root, *_, tiny = pipeline
    out = tmp_path_factory.mktemp("trained") / "sft"
    train_sft(sft_params(root, tiny), out)
    return out


def trainable(model) -> dict:
    """Name -> a copy of each trainable parameter, to compare with after a step."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def moved_parameters(before: dict, model) -> list[str]:
    """The names of the parameters in `before` that `model` now holds other values for."""
    after = dict(model.named_parameters())
    return [n for n, p in before.items() if not torch.equal(p, after[n].detach().to(p.device))]


def train_recording(params: Params, out, patch, on_build=None) -> tuple[dict, dict]:
    """`train_sft(params, out)` and what it built: {"model", "before": its trainable
    parameters as built}; `on_build(model)` runs before training (e.g. to hook it);
    `patch`: a pytest MonkeyPatch."""
    from components.speechlm import io
    from components.speechlm.train import train_sft

    build, built = io.build_speechlm, {}

    def recording_build(*args, **kwargs):
        model, tokenizer = build(*args, **kwargs)
        built["model"], built["before"] = model, trainable(model)
        if on_build is not None:
            on_build(model)
        return model, tokenizer

    patch.setattr(io, "build_speechlm", recording_build)
    return train_sft(params, out), built
