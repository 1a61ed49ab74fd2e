"""The RL prompt filter: the chance that a completion group is all of one outcome, the SFT
model's probability of sampling the consensus label (the token a completion's label is),
and the stage leaving out the clips whose groups would teach the label nothing."""
import numpy as np
import pytest
import torch

from components.rl.prompt_filter import gold_probabilities, informative, uniform_group_probability
from components.speechlm.formats import SER_TASK, format_target
from tests.rl_fixture import tiny_rl_params


def test_a_group_is_uniform_when_all_are_right_or_all_are_wrong():
    found = uniform_group_probability(np.array([0.0, 1.0, 0.5, 0.9]), 8)
    assert found.tolist() == pytest.approx([1.0, 1.0, 2 / 256, 0.9 ** 8 + 0.1 ** 8])


def test_informative_keeps_the_rows_at_most_that_uniform_and_at_least_the_least_uniform():
    uniform = np.array([0.9, 0.2, 0.99, 0.5, 0.1])
    assert informative(uniform, 0.5, 1) == [1, 3, 4]
    assert informative(uniform, 0.05, 2) == [1, 4]     # none qualifies: the two least uniform
    assert informative(uniform, 1.0, 0) == [0, 1, 2, 3, 4]


def test_only_a_label_first_format_can_be_filtered():
    from transformers import AutoTokenizer

    from components.models.bundled import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("bundled:smollm2-135m-instruct"))
    row = {"utt_id": "a", "prompt_ids": [1, 2], "label": "sad", "label_set": ["sad", "angry"],
           "format": "reason_first", "transcript_source": "asr"}
    with pytest.raises(ValueError, match="rl.max_uniform_group < 1 needs the label first"):
        gold_probabilities(None, tokenizer, [row], lambda ids: {}, 1.0, torch.device("cpu"))


@pytest.fixture
def rl_params(pipeline, trained, tmp_path):
    return tiny_rl_params(pipeline[0], trained, tmp_path)


@pytest.mark.slow
def test_gold_probability_is_the_sampling_probability_of_the_targets_label_token(rl_params):
    """Against the model's next-token distribution over the SFT target itself (prompt +
    "Emotion: <label>\\nRationale: ..."), at two temperatures and in batches of any size."""
    from components.rl.worker import build_trainer

    trainer, _, _, rows = build_trainer(rl_params, 1, torch.device("cpu"))
    model, tokenizer = trainer.model, trainer.processing_class
    cpu = torch.device("cpu")
    found = {t: gold_probabilities(model, tokenizer, rows, trainer.audio_for, t, cpu,
                                   batch_size=4) for t in (1.0, 0.7)}
    one_by_one = gold_probabilities(model, tokenizer, rows, trainer.audio_for, 1.0, cpu,
                                    batch_size=1)
    assert np.allclose(found[1.0], one_by_one, atol=1e-6)  # padding changes nothing
    model.eval()
    for i, row in enumerate(rows):
        target = format_target(SER_TASK, row["format"], row["transcript_source"], None,
                               row["label"], "The pitch is high.")
        assert target.startswith("Emotion: ")
        lead = len(tokenizer("Emotion:", add_special_tokens=False)["input_ids"])
        ids = list(row["prompt_ids"]) + tokenizer(target, add_special_tokens=False)["input_ids"]
        at = len(row["prompt_ids"]) + lead  # the label's token in the target
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids]),
                           **trainer.audio_for([row["utt_id"]])).logits[0, at - 1]
        for t, p in found.items():
            assert p[i] == pytest.approx((logits / t).softmax(-1)[ids[at]].item(), rel=1e-4)
    assert not np.allclose(found[1.0], found[0.7])


@pytest.mark.slow
def test_the_stage_trains_on_the_clips_whose_groups_can_differ(rl_params, monkeypatch, capsys):
    import components.rl.prompt_filter as prompt_filter
    from components.rl.worker import build_trainer

    _, _, _, every = build_trainer(rl_params, 1, torch.device("cpu"))
    assert len(every) == 6
    p_gold = np.array([0.99, 0.5, 0.999, 0.6, 1.0, 0.3])  # G = 2: uniform .98 .5 .998 .52 1 .58
    monkeypatch.setattr(prompt_filter, "gold_probabilities", lambda *a, **k: p_gold)
    rl_params.rl.max_uniform_group = 0.6
    trainer, _, _, rows = build_trainer(rl_params, 1, torch.device("cpu"))
    assert [r["utt_id"] for r in rows] == [every[i]["utt_id"] for i in (1, 3, 5)]
    assert len(trainer.train_dataset) == 3
    assert "rl: 3 of 6 clips kept" in capsys.readouterr().out


def _score_a_share(rank: int, world: int, port: int, out) -> None:
    import torch.distributed as dist

    from components.rl.worker import sharded

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        scored = []
        values = sharded(lambda share: scored.extend(share) or [10.0 * i for i in share], 5)
        out.put((rank, scored, values.tolist()))
    finally:
        dist.destroy_process_group()


def test_workers_score_a_share_each_and_all_get_every_value():
    import multiprocessing
    import socket

    from components.rl.worker import sharded

    assert sharded(lambda share: [float(i) for i in share], 3).tolist() == [0.0, 1.0, 2.0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    workers = [context.Process(target=_score_a_share, args=(rank, 2, port, out))
               for rank in range(2)]
    for w in workers:
        w.start()
    results = sorted(out.get(timeout=120) for _ in workers)
    for w in workers:
        w.join(timeout=60)
    assert [r[1] for r in results] == [[0, 2, 4], [1, 3]]  # each index scored once
    assert all(r[2] == [0.0, 10.0, 20.0, 30.0, 40.0] for r in results)
