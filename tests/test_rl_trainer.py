"""The audio GRPO trainer on a tiny SpeechLM: the private TRL methods it overrides are still
there, audio stays with its rows through TRL's repetition, shuffling and splitting, every
backbone forward gets audio, the KL reference is the SFT model, the loss is GRPO's by hand,
and the rewards are combined the GRPO-PTR way."""
import inspect

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from components.rl.ptr import combine
from components.rl.worker import build_trainer
from components.speechlm.formats import SER_TASK, format_target
from tests.rl_fixture import SPREAD, spy_audio_forwards, tiny_rl_params

pytestmark = pytest.mark.slow

RATIONALE = ("The voice is loud and the pace is fast, with a falling contour at the end of "
             "the sentence, so the speaker sounds angry rather than calm or sad about it.")


@pytest.fixture
def rl_params(pipeline, trained, tmp_path):
    return tiny_rl_params(pipeline[0], trained, tmp_path)


def spread_trainer(params, learning_rate: float = 1e-2):
    params.rl.rewards = {SPREAD: 1.0}
    params.rl.learning_rate = learning_rate
    return build_trainer(params, 1, torch.device("cpu"))


def audio_of(batch) -> dict:
    return {k: batch[k] for k in ("audio_values", "audio_mask", "prosody_values") if k in batch}


def test_trl_is_pinned_and_the_private_methods_the_subclass_overrides_are_there():
    import trl
    from trl import GRPOTrainer

    assert trl.__version__ == "1.16.0"
    expected = {
        "_generate_and_score_completions": ["self", "inputs"],
        "_tokenize_prompts": ["self", "prompts"],
        "_generate_single_turn": ["self", "prompt_ids", "images", "multimodal_fields",
                                  "num_generations"],
        "_get_per_token_logps_and_entropies": ["self", "model", "input_ids", "attention_mask",
                                               "logits_to_keep", "batch_size"],
        "_calculate_rewards": ["self", "inputs", "prompts", "completions",
                               "completion_ids_list"],
        "compute_loss": ["self", "model", "inputs", "return_outputs", "num_items_in_batch"],
        "training_step": ["self", "model", "inputs", "num_items_in_batch"],
    }
    for name, params in expected.items():
        found = list(inspect.signature(getattr(GRPOTrainer, name)).parameters)
        assert found[:len(params)] == params, f"GRPOTrainer.{name} moved: {found}"
    # the call paths the subclass relies on
    assert "self._tokenize_prompts(prompts)" in inspect.getsource(GRPOTrainer._generate)
    source = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    assert "self._calculate_rewards(" in source and "use_adapter(" in source
    assert "model.peft_config" in source
    assert "multimodal_fields.items()" in inspect.getsource(GRPOTrainer._generate_single_turn)


def test_audio_rows_stay_aligned_with_their_prompts_through_repeat_shuffle_split(rl_params):
    rl_params.rl.max_clips = 8
    trainer, _, _, rows = build_trainer(rl_params, 1, torch.device("cpu"))
    trainer.args.steps_per_generation = 2  # two optimizer batches per generation: a split
    trainer.model.train()
    batch = next(iter(trainer.get_train_dataloader()))
    utts = [row["utt_id"] for row in batch]
    assert len(utts) == 8 and all(utts.count(u) % 2 == 0 for u in utts)  # G repeats per prompt
    by_prompt: dict[tuple, set] = {}
    for row in rows:
        by_prompt.setdefault(tuple(row["prompt_ids"]), set()).add(row["utt_id"])
    trainer._buffered_inputs = None
    trainer._prepare_inputs(batch)
    parts = trainer._buffered_inputs
    assert len(parts) == 2
    order = []
    for part in parts:
        for i in range(part["prompt_ids"].shape[0]):
            prompt = tuple(part["prompt_ids"][i][part["prompt_mask"][i].bool()].tolist())
            candidates = by_prompt[prompt]
            n = int(part["audio_mask"][i].sum())
            matches = []
            for utt in candidates:
                own = trainer.audio_for([utt])
                if int(own["audio_mask"][0].sum()) == n and torch.equal(
                        own["audio_values"][0][:n], part["audio_values"][i][:n]) and \
                        torch.equal(own["prosody_values"][0], part["prosody_values"][i]):
                    matches.append(utt)
            assert matches, f"row {i}: its audio belongs to no clip with its prompt"
            order.append(matches[0])
    assert sorted(order) == sorted(utts)
    assert order != utts  # TRL did shuffle the rows (seeded): the audio moved with them


@pytest.mark.parametrize("splits", [["dev"], ["train", "dev"]])
def test_the_prompts_come_from_the_configured_splits(rl_params, splits):
    from components.prepare.schema import read_manifest

    manifest, meta = read_manifest(rl_params.rl.manifest)
    labelled = manifest[manifest["label"].isin(meta.labels)]
    rl_params.rl.splits, rl_params.rl.max_clips = splits, None
    _, _, _, rows = build_trainer(rl_params, 1, torch.device("cpu"))
    expected = set(labelled.loc[labelled["split"].isin(splits), "utt_id"])
    assert {row["utt_id"] for row in rows} == expected and len(rows) == len(expected)
    assert all(row["cues"] for row in rows)  # the reasoning reward has each clip's cues


def test_every_backbone_forward_gets_audio_and_the_audio_changes_the_logprobs(rl_params):
    trainer, *_ = spread_trainer(rl_params)
    model = trainer.model
    seen = spy_audio_forwards(model)
    trainer.train()
    # generation's prefill, the reference log-probs and the loss forward at least
    assert len(seen) >= 3 and all(audio is not None for _, audio in seen)
    assert trainer.feed.missed == 0 and trainer.feed.served >= 2

    model.train()
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    keep = batch["completion_ids"].shape[1]
    audio = audio_of(batch)
    with torch.no_grad():
        trainer._rows_audio = audio
        own = trainer._get_per_token_logps_and_entropies(model, ids, mask, keep)[0]
        trainer._rows_audio = {**audio, "audio_values": audio["audio_values"] + 1.0}
        other = trainer._get_per_token_logps_and_entropies(model, ids, mask, keep)[0]
    trainer._rows_audio = None
    assert not torch.allclose(own, other, atol=1e-4)


def _completion_logps(model, ids, mask, audio, keep):
    logits = model(input_ids=ids, attention_mask=mask, **audio).logits[:, :-1]
    logps = F.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
    return logps[:, -keep:]


def test_reference_is_the_sft_model_and_the_loss_is_grpo_by_hand(rl_params):
    from components.speechlm.io import load_speechlm

    trainer, *_ = spread_trainer(rl_params)
    model = trainer.model
    model.train()
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    with torch.no_grad():  # move the RL adapter away from zero: policy != reference
        for name, param in model.named_parameters():
            if "lora_B" in name and param.requires_grad:
                param.normal_(0, 0.05)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    keep, audio = batch["completion_ids"].shape[1], audio_of(batch)
    completion_mask = batch["completion_mask"].float()

    sft, _ = load_speechlm(rl_params.rl.sft)
    sft.eval()
    model.eval()
    with torch.no_grad():
        reference = _completion_logps(sft, ids, mask, audio, keep)
        with model.disable_adapter():
            disabled = _completion_logps(model, ids, mask, audio, keep)
        policy_now = _completion_logps(model, ids, mask, audio, keep)
    valid = completion_mask.bool()
    assert torch.allclose(disabled[valid], reference[valid], atol=1e-4)
    # TRL's fused LM head sums in tiles: equal up to float rounding
    assert torch.allclose(batch["ref_per_token_logps"][valid], reference[valid], atol=2e-3)
    assert not torch.allclose(policy_now[valid], reference[valid], atol=1e-3)

    model.train()  # dropout is disabled by the trainer: the same numbers in train mode
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop
    loss = trainer.compute_loss(model, batch)
    policy = _completion_logps(model, ids, mask, audio, keep)
    ratio = torch.exp(policy - policy.detach())
    advantages = batch["advantages"][:, None]
    kl = torch.exp(reference - policy) - (reference - policy) - 1
    per_token = -ratio * advantages + rl_params.rl.beta * kl
    by_hand = ((per_token * completion_mask).sum(1) / completion_mask.sum(1).clamp(min=1)).mean()
    assert torch.isclose(loss, by_hand, atol=1e-5)
    assert abs(float(by_hand)) > 1e-6  # not a trivially zero loss


def test_a_step_changes_only_the_rl_adapter_and_the_saved_folder_is_that_policy(
        rl_params, tmp_path):
    from components.rl.adapters import write_rl_folder
    from components.rl.worker import _adapter_config, _adapter_state
    from components.speechlm.io import load_speechlm

    rl_params.rl.activation_checkpointing = True  # the large-LM setting trains the same way
    trainer, *_ = spread_trainer(rl_params, learning_rate=5e-2)
    model = trainer.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    assert model.model.language_model.is_activation_checkpointing
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert changed and all("lora_" in n and "language_model" in n for n in changed)
    lm = model.model.language_model
    out = write_rl_folder(rl_params.rl.sft, _adapter_state(lm), _adapter_config(lm),
                          tmp_path / "rl")
    saved, _ = load_speechlm(out)
    saved.eval()
    model.eval()
    batch = trainer.audio_for([trainer.train_dataset[0]["utt_id"]])
    ids = torch.tensor([trainer.train_dataset[0]["prompt_ids"]])
    with torch.no_grad():
        ours = model(input_ids=ids, **batch).logits
        theirs = saved(input_ids=ids, **batch).logits
    assert torch.allclose(ours, theirs, atol=1e-4)


def _explain(label: str, fmt: str, source: str) -> str:
    return format_target(SER_TASK, fmt, source, "some words", label, RATIONALE)


def test_rewards_are_combined_the_grpo_ptr_way(rl_params):
    rl_params.rl.ptr.accuracy_window = 2
    trainer, schedule, _, rows = build_trainer(rl_params, 1, torch.device("cpu"))
    trainer.model.train()
    row = rows[0]
    label = row["label"]
    wrong = next(x for x in row["label_set"] if x != label)
    fmt, source = row["format"], row["transcript_source"]
    inputs = [row, row, rows[1], rows[1]]
    completions = [_explain(label, fmt, source), _explain(wrong, fmt, source),
                   _explain(wrong, fmt, source), "garbage <think> ..."]
    prompts = [r["prompt"] for r in inputs]
    ids = [[1, 2]] * 4
    names = list(trainer.reward_func_names)
    assert names == ["format", "outcome", "reasoning"]
    weights = trainer.reward_weights

    # schedule off: R = 0.3 R_f + 1.0 R_o, whatever the reasoning reward says
    schedule.threshold = 2.0  # unreachable
    adjusted = trainer._calculate_rewards(inputs, prompts, completions, ids)
    raw = np.array([[f(prompts=prompts, completions=completions, completion_ids=ids,
                       **{k: [r[k] for r in inputs] for k in row})[i]
                     for f in trainer.reward_funcs] for i in range(4)])
    assert raw[:, 0].tolist() == [1.0, 1.0, 1.0, 0.0] and raw[:, 1].tolist() == [1, 0, 0, 0]
    assert raw[0, 2] > 0 and raw[1, 2] > 0
    total = (adjusted * weights).sum(1).numpy()
    assert np.allclose(total, 0.3 * raw[:, 0] + raw[:, 1], atol=1e-6)
    assert trainer._metrics["train"]["ptr/schedule_on"][-1] == 0.0

    # schedule on: the reasoning term is weighted by the group's trust tau
    schedule.threshold = 0.0
    schedule.update([True, True])
    assert schedule.on
    adjusted = trainer._calculate_rewards(inputs, prompts, completions, ids)
    total = (adjusted * weights).sum(1).numpy()
    mu_c, mu_w = raw[0, 2], raw[1, 2]
    tau = np.exp(mu_c - mu_w) if mu_c < mu_w else 1.0
    expected = 0.3 * raw[:, 0] + raw[:, 1] + 0.5 * raw[:, 2] * np.array([tau, tau, 1.0, 1.0])
    assert np.allclose(total, expected, atol=1e-6)
    found, _ = combine(raw, names, weights.tolist(), 2, rl_params.rl.ptr, True)
    assert np.allclose(total, found, atol=1e-6)


def test_trls_deprecated_checkpointing_calls_warn_no_more_and_other_warnings_still_do(rl_params):
    """The exact messages of the transformers in use (a rewording fails here) are hidden by
    building a trainer; another FutureWarning still shows."""
    import warnings

    from transformers import modeling_utils

    source = inspect.getsource(modeling_utils)
    for method in ("gradient_checkpointing_enable", "gradient_checkpointing_disable",
                   "is_gradient_checkpointing"):
        assert f"`{method}` is deprecated and will be removed" in source, method
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        build_trainer(rl_params, 1, torch.device("cpu"))
        warnings.warn("`gradient_checkpointing_enable` is deprecated and will be removed in v6.",
                      FutureWarning)
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.",
                      FutureWarning)
        warnings.warn("something else is deprecated", FutureWarning)
    shown = [str(w.message) for w in seen if w.category is FutureWarning]
    assert "something else is deprecated" in shown
    assert not [m for m in shown if "checkpointing" in m]
