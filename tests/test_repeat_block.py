"""The repeat block: no run of n words (tokens compared by word) of the generated text occurs
more than `max_repeats` times, the prompt is not counted, and a model that loops under greedy
decoding stops looping."""
from collections import Counter

import pytest
import torch

from components.serve.repeat_block import RepeatBlock


def most_repeated(tokens: list[int], n: int) -> int:
    return max(Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)).values())


def test_the_token_that_would_repeat_a_run_too_often_is_banned():
    block = RepeatBlock(3, 2, prompt_len=0)
    assert block.banned([1, 2, 3, 1, 2, 3, 1, 2]) == [3]
    assert block.banned([1, 2, 3, 1, 2, 3, 1, 4]) == []
    assert RepeatBlock(3, 3, prompt_len=0).banned([1, 2, 3, 1, 2, 3, 1, 2]) == []
    assert RepeatBlock(1, 2, prompt_len=0).banned([5, 5, 7]) == [5]
    assert block.banned([1]) == []


def test_the_prompt_is_not_counted_and_each_row_has_its_own_bans():
    block = RepeatBlock(2, 1, prompt_len=4)
    ids = torch.tensor([[1, 2, 1, 2, 1, 2, 1],    # the prompt's (1, 2) are not counted
                        [0, 0, 0, 0, 3, 2, 1]])
    scores = block(ids, torch.zeros(2, 5))
    assert scores[0, 2] == -float("inf")           # (1, 2) once in row 0's completion
    assert torch.isfinite(scores[0, [0, 1, 3, 4]]).all() and torch.isfinite(scores[1]).all()
    assert torch.isfinite(block(ids[:, :5], torch.zeros(2, 5))).all()


@pytest.mark.parametrize("ngram, repeats", [(0, 2), (3, 0)])
def test_a_block_that_could_ban_everything_is_refused(ngram, repeats):
    with pytest.raises(ValueError, match="ngram >= 1 and max_repeats >= 1"):
        RepeatBlock(ngram, repeats, prompt_len=0)


def test_a_looping_greedy_lm_stops_looping(tmp_path):
    from transformers import AutoModelForCausalLM, LogitsProcessorList

    from tests.tiny_models import save_tiny_lm

    lm = AutoModelForCausalLM.from_pretrained(save_tiny_lm(tmp_path / "lm")).eval()
    prompt = torch.tensor([[5, 6, 7, 8]])
    plain = lm.generate(prompt, max_new_tokens=40, do_sample=False)[0, 4:].tolist()
    assert most_repeated(plain, 3) > 2      # a random tiny LM loops: the block has work to do
    blocked = lm.generate(prompt, max_new_tokens=40, do_sample=False,
                          logits_processor=LogitsProcessorList([RepeatBlock(3, 2, 4)]))
    assert len(blocked[0, 4:]) == 40 and most_repeated(blocked[0, 4:].tolist(), 3) <= 2


@pytest.mark.parametrize("value", [[3], [3, 2, 1], [0, 2], [3, 0]])
def test_bad_repeat_block_settings_are_refused(value):
    from components.config import ConfigError, params_from_dict

    with pytest.raises(ConfigError, match=r"inference.repeat_block must be \[n, k\]"):
        params_from_dict({"inference": {"repeat_block": value}})


@pytest.mark.slow
def test_the_predictor_and_the_served_model_decode_with_the_block(trained, pipeline):
    import mlflow

    from components.serve.predictor import clips_from_features, frames_of, load_predictor
    from components.serve.pyfunc import EmoReasonModel

    root, df, feats, *_ = pipeline
    rows = feats[feats["utt_id"].isin(df[df["split"] == "test"]["utt_id"])].head(4)
    plain = load_predictor(trained, max_new_tokens=30)
    clips = clips_from_features(rows, frames_of(root / "features" / "frames",
                                                rows["utt_id"].tolist()), plain)
    blocked = load_predictor(trained, max_new_tokens=30, repeat_block=[3, 2])
    assert blocked.repeat_block == (3, 2) and plain.repeat_block is None

    def worst(predictor):
        answers = predictor.predict_clips(clips, rationale=True, batch_size=4)
        ids = [predictor.tokenizer(a["output"], add_special_tokens=False)["input_ids"]
               for a in answers]
        return max(most_repeated(i, 3) for i in ids), [a["label"] for a in answers]

    (looped, labels), (bounded, same_labels) = worst(plain), worst(blocked)
    assert looped > 2 and bounded <= 2      # the tiny model loops; blocked it cannot
    assert same_labels == labels            # the label is scored before the rationale
    served = EmoReasonModel()
    served.load_context(mlflow.pyfunc.PythonModelContext(
        {"model": str(trained)}, {"repeat_block": [4, 1]}))
    assert served.predictor.repeat_block == (4, 1)


def test_tokens_of_one_word_count_as_that_word():
    from transformers import AutoTokenizer

    from components.models.bundled import resolve_model
    from components.serve.repeat_block import word_ids

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("bundled:smollm2-135m-instruct"))
    words = word_ids(tokenizer)
    the, voice = (tokenizer.convert_tokens_to_ids(t) for t in (["The", "Ġthe", "the"],
                                                               ["Ġvoice", "voice"]))
    assert len(set(words[the].tolist())) == 1 and len(set(words[voice].tolist())) == 1
    assert words[the[0]] != words[voice[0]] and len(words) == len(tokenizer)
    # "The voice is", then " the voice is" twice: the third " is" completes the word run a
    # third time and every token of "is" is banned; the scores may be wider than the tokenizer
    run = [tokenizer.convert_tokens_to_ids(t) for t in ("The", "Ġvoice", "Ġis", "Ġlow", ".",
                                                        "Ġthe", "Ġvoice", "Ġis", "Ġhigh",
                                                        "Ġthe", "Ġvoice")]
    block = RepeatBlock(3, 2, prompt_len=0, words=words)
    scores = block(torch.tensor([run]), torch.zeros(1, len(tokenizer) + 7))
    banned = set(torch.nonzero(scores[0] == -float("inf")).flatten().tolist())
    is_ = {tokenizer.convert_tokens_to_ids(t) for t in ("Ġis", "is")}
    assert is_ <= banned and banned == set(torch.nonzero(words == words[run[2]]).flatten().tolist())
    assert RepeatBlock(3, 3, 0, words)(torch.tensor([run]), torch.zeros(1, len(tokenizer))
                                       ).isfinite().all()
