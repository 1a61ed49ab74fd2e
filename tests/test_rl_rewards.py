"""GRPO-PTR's rewards: format, outcome (plain and annotator-aware) and reasoning, in TRL's
reward-function form, and the three reasoning scorers behind them."""
import json
import math
import pickle

import pytest

from components.config import JudgeConfig, RLConfig, VerifyConfig
from components.distill.records import ClipCues
from components.evaluate.judge import CRITERIA
from components.rl.reasoning import (
    GroundedScorer,
    JudgeScorer,
    ModelScorer,
    build_scorer,
    salient_cues,
)
from components.rl.rewards import (
    MAX_COMPLETION_CHARS,
    REWARDS,
    build_reward_funcs,
    completion_text,
    cues_from_json,
    cues_to_json,
)

LABELS = ["neutral", "happy", "sad", "angry"]
ANGRY = ClipCues(
    utt_id="a1", transcript="get out now", label="angry", label_set=tuple(LABELS),
    minority=("sad",), gender="male", caption="loud, fast",
    levels={"pitch_level": "normal", "pitch_range_level": "normal", "energy_level": "high",
            "rate_level": "fast", "pause_level": "none"},
    measures={"energy_dbfs": -12.5, "rate_sps": 6.1})
# 20 words, every bigram distinct, ends with a full stop, no markup; loud + fast agree with the
# measured levels; covers energy, rate and the words; argues for anger without leaking it.
GOOD = ('The voice is loud and the pace is fast. Saying "get out now" this way sounds '
        'hostile, which points to anger.')


def rows(n: int, fmt: str = "explain_after", source: str = "asr", **over) -> dict:
    cols = {"label": ["angry"] * n, "annotator_labels": [["angry", "sad"]] * n,
            "label_set": [LABELS] * n, "format": [fmt] * n, "transcript_source": [source] * n,
            "cues": [cues_to_json(ANGRY)] * n}
    return {**cols, **{k: [v] * n for k, v in over.items()}}


def reward(name: str, completions: list, **cols) -> list[float]:
    return REWARDS[name](prompts=[None] * len(completions), completions=completions,
                         completion_ids=[[]] * len(completions), trainer_state=None,
                         **(cols or rows(len(completions))))


def explain(label: str, rationale: str = GOOD) -> str:
    return f"Emotion: {label}\nRationale: {rationale}"


# ---------------------------------------------------------------- columns and completions

def test_cues_survive_the_json_column():
    text = cues_to_json(ANGRY)
    assert json.loads(text)["levels"]["energy_level"] == "high"
    assert cues_from_json(text) == ANGRY


def test_completion_text_reads_strings_and_conversations():
    assert completion_text("Emotion: sad") == "Emotion: sad"
    assert completion_text([{"role": "assistant", "content": "Emotion: sad"}]) == "Emotion: sad"
    assert completion_text([{"role": "assistant",
                             "content": [{"type": "text", "text": "Emotion: "},
                                         {"type": "text", "text": "sad"}]}]) == "Emotion: sad"
    assert completion_text([{"role": "user", "content": "hi"}]) == ""
    assert completion_text(None) == completion_text(42) == completion_text([None, 3]) == ""
    assert completion_text("x" * (MAX_COMPLETION_CHARS + 1)) == ""


# ---------------------------------------------------------------- format and outcome

def test_format_reward_follows_the_configured_format():
    good_after = explain("angry")
    good_first = f"<think>{GOOD}</think>\n<answer>angry</answer>"
    assert reward("format", [good_after, good_first, "angry"],
                  **{**rows(3), "format": ["explain_after", "reason_first", "explain_after"]}) \
        == [1.0, 1.0, 0.0]
    # the other format's structure is not this one's
    assert reward("format", [good_first]) == [0.0]
    # with the model writing the transcript, a well-formed output has one
    with_words = "Transcript: get out now\n" + good_after
    assert reward("format", [good_after, with_words], **rows(2, source="model")) == [0.0, 1.0]
    # an unclosed answer tag is not the structure
    assert reward("format", [f"<think>{GOOD}</think><answer>angry"], **rows(1, "reason_first")) \
        == [0.0]


def test_outcome_rewards_the_consensus_label_and_partial_credit_the_annotators():
    outs = [explain("angry"), explain("Anger"), explain("sad"), explain("happy"), "nothing"]
    assert reward("outcome", outs) == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert reward("outcome_annotator_aware", outs) == [1.0, 1.0, 0.5, 0.0, 0.0]
    # the parser finds a label in unstructured text, but only the format's answer pays
    chat = [{"role": "assistant", "content": explain("angry")}]
    assert reward("outcome", ["It sounds angry.", "Emotion: angry", chat]) == [0.0, 0.0, 1.0]
    cfg = RLConfig(rewards={"outcome_annotator_aware": 1.0}, partial_credit=0.25)
    (func,), _, _ = build_reward_funcs(cfg)
    assert func(prompts=None, completions=outs, **rows(5)) == [1.0, 1.0, 0.25, 0.0, 0.0]
    # no annotator labels (or None from a table): only the consensus counts
    assert func(prompts=None, completions=outs[:3], **rows(3, annotator_labels=None)) \
        == [1.0, 1.0, 0.0]


@pytest.mark.parametrize("completion", [
    None, 42, 3.5, b"\xff\xfe", {"content": "angry"}, [], [{"role": "assistant"}], "", "   ",
    "Emotion:", "Rationale: only a rationale", "<think></think><answer></answer>",
    "<think>" * 5000, "</answer>" * 3000, "\x00\ud800\U0001F600 \u202e", "Emotion: \u6012",
    "<|im_end|><|audio|>" * 100, "```json\n{\"emotion\": 1}\n```", "<script>alert(1)</script>",
    "Emotion: angry\nRationale: " + "loud " * 3000,  # over MAX_COMPLETION_CHARS
    "x" * 1_000_000,
])
def test_garbage_scores_zero_and_never_raises(completion):
    for fmt in ("explain_after", "reason_first"):
        for name in REWARDS:
            values = reward(name, [completion], **rows(1, fmt))
            assert values == [0.0], (name, fmt)


def test_missing_or_misaligned_columns_are_a_clear_error():
    cols = rows(2)
    del cols["cues"]
    with pytest.raises(ValueError, match="needs the dataset columns \\['cues'\\]"):
        reward("reasoning", ["a", "b"], **cols)
    with pytest.raises(ValueError, match="one entry per completion"):
        reward("outcome", ["a", "b", "c"], **rows(2))


# ---------------------------------------------------------------- reasoning reward

class CountingScorer:
    def __init__(self, value):
        self.value, self.calls = value, []

    def score(self, items):
        self.calls.append(items)
        return [self.value] * len(items)


def test_reasoning_reward_sends_each_batch_to_the_scorer_once():
    scorer = CountingScorer(0.7)
    outs = [explain("angry"), explain("sad", "It sounds sad."), "Emotion: angry", "garbage"]
    values = REWARDS["reasoning"](None, outs, scorer=scorer, **rows(4))
    assert values == [0.7, 0.7, 0.0, 0.0]  # no rationale: not scored
    (items,) = scorer.calls
    assert [(cues.utt_id, label, text) for cues, label, text in items] == \
        [("a1", "angry", GOOD), ("a1", "sad", "It sounds sad.")]


@pytest.mark.parametrize("value, expected", [(1.7, 1.0), (-0.3, 0.0), (math.nan, 0.0)])
def test_reasoning_reward_stays_in_the_unit_interval(value, expected):
    assert REWARDS["reasoning"](None, [explain("angry")], scorer=CountingScorer(value),
                                **rows(1)) == [expected]


def test_unreadable_cues_score_zero():
    for bad in (None, "", "{not json", "[1, 2]", json.dumps({"utt_id": "x"})):
        assert REWARDS["reasoning"](None, [explain("angry")], scorer=CountingScorer(1.0),
                                    **rows(1, cues=bad)) == [0.0]


def test_reasoning_reward_prefers_grounded_consistent_rationales():
    wrong = GOOD.replace("loud", "soft").replace("fast", "slow")
    other = "The voice is loud and the pace is fast, but the speaker sounds cheerful and happy."
    values = reward("reasoning", [explain("angry"), explain("angry", wrong),
                                  explain("angry", other)])
    assert values[0] == pytest.approx(0.95)
    assert values[0] > values[1] and values[0] > values[2]


# ---------------------------------------------------------------- building

def test_build_reward_funcs_follows_the_params():
    scorer = CountingScorer(0.5)
    funcs, weights, names = build_reward_funcs(RLConfig(), scorer=scorer)
    assert names == ["format", "outcome", "reasoning"]
    assert weights == [0.3, 1.0, 0.5]
    assert funcs[2](prompts=None, completions=[explain("angry")], **rows(1)) == [0.5]
    assert len(scorer.calls) == 1
    # picklable, as a Ray worker receives them
    clone = pickle.loads(pickle.dumps(funcs[1]))
    assert clone(None, [explain("angry")], **rows(1)) == [1.0]
    cfg = RLConfig(rewards={"outcome": 1.0, "format": 0.2})
    funcs, weights, names = build_reward_funcs(cfg)
    assert names == ["outcome", "format"] and weights == [1.0, 0.2]


def test_unknown_reward_or_scorer_names_are_errors():
    with pytest.raises(ValueError, match="unknown reward.*'fluency'.*outcome_annotator_aware"):
        build_reward_funcs(RLConfig(rewards={"outcome": 1.0, "fluency": 0.5}))
    with pytest.raises(ValueError, match="unknown rl.reasoning_scorer 'oracle'"):
        build_reward_funcs(RLConfig(reasoning_scorer="oracle"))
    with pytest.raises(ValueError, match="needs rl.reasoning_model"):
        build_scorer(RLConfig(reasoning_scorer="model"))
    # the outcome-only ablation needs no scorer at all
    ablation = RLConfig(rewards={"outcome": 1.0, "format": 0.3}, reasoning_scorer="oracle")
    assert build_reward_funcs(ablation)[2] == ["outcome", "format"]


# ---------------------------------------------------------------- grounded scorer

def test_salient_cues_are_the_clear_levels_and_the_words():
    assert salient_cues(ANGRY) == ["energy", "rate", "words"]
    quiet = ClipCues("q", "", "sad", tuple(LABELS),
                     levels={"pitch_level": "low", "pause_level": "many", "intonation": "falling",
                             "energy_level": "unknown"})
    assert salient_cues(quiet) == ["pitch", "pause", "intonation"]


def test_grounded_scores_map_measured_shares_to_one_to_five():
    scorer = GroundedScorer(VerifyConfig())
    assert scorer.criteria(ANGRY, "angry", GOOD) == {
        "factual_alignment": 5.0,  # 2 of 2 claims agree
        "interpretive_quality": 5.0,  # argues for anger, no leak
        "completeness": 5.0,  # energy, rate and the words covered
        "fluency": 4.0,  # 20 words < 30: length fails, the other three hold -> 1 + 4 * 3/4
    }
    assert scorer.score([(ANGRY, "angry", GOOD)]) == [pytest.approx(19 / 20)]
    # half the claims contradict, pace not covered, the words not mentioned
    half = "The voice is loud and the pace is slow. It sounds hostile, pointing to anger."
    crit = scorer.criteria(ANGRY, "angry", half)
    assert crit["factual_alignment"] == 3.0 and crit["completeness"] == pytest.approx(1 + 4 * 2 / 3)
    # predicted another label than the rationale argues for
    assert scorer.criteria(ANGRY, "sad", GOOD)["interpretive_quality"] == 1.0
    assert scorer.criteria(ANGRY, None, GOOD)["interpretive_quality"] == 1.0
    # the label given away up front
    leak = "Angry: " + GOOD
    assert scorer.criteria(ANGRY, "angry", leak)["interpretive_quality"] == 3.0
    # within the configured length range the fluency is full
    short_ok = GroundedScorer(VerifyConfig(min_words=10))
    assert short_ok.criteria(ANGRY, "angry", GOOD)["fluency"] == 5.0


def test_grounded_fluency_sees_loops_cut_offs_and_markup():
    scorer = GroundedScorer(VerifyConfig(min_words=5))
    base = scorer.criteria(ANGRY, "angry", GOOD)["fluency"]
    assert base == 5.0
    assert scorer.criteria(ANGRY, "angry", GOOD.rstrip("."))["fluency"] == 4.0
    assert scorer.criteria(ANGRY, "angry", GOOD + " <|im_end|>")["fluency"] == 4.0
    assert scorer.criteria(ANGRY, "angry", "**" + GOOD + "**")["fluency"] == 4.0
    looping = "The voice is loud. " * 10  # 4 distinct bigrams of 39
    assert scorer.criteria(ANGRY, "angry", looping)["fluency"] == \
        pytest.approx(1 + 4 * (3 + 4 / 39) / 4)


@pytest.mark.parametrize("text", [None, "", "   ", "<think>unfinished", "<|im_end|>", 7])
def test_grounded_empty_rationale_scores_zero(text):
    assert GroundedScorer().score([(ANGRY, "angry", text)]) == [0.0]


# ---------------------------------------------------------------- judge scorer


def test_judge_scorer_uses_the_judges_mean_and_scores_failures_zero(stub):
    def answer(user: str) -> str:
        if "mumble" in user:
            return "I cannot grade this."
        return json.dumps(dict.fromkeys(CRITERIA, 4 if "loud" in user else 2))

    stub.responder = answer
    scorer = JudgeScorer(JudgeConfig(base_url=stub.base_url, model="judge", max_retries=0))
    values = scorer.score([(ANGRY, "angry", GOOD), (ANGRY, "sad", "It is quiet."),
                           (ANGRY, "angry", "mumble"), (ANGRY, "angry", "  ")])
    assert values == [pytest.approx(0.8), pytest.approx(0.4), 0.0, 0.0]
    assert stub.calls == 3  # the empty rationale is not sent
    assert pickle.loads(pickle.dumps(scorer)).cfg == scorer.cfg


def test_judge_scorer_survives_a_down_endpoint_and_refuses_a_bad_one(stub):
    stub.fail_first, stub.fail_status = 10, 503
    scorer = JudgeScorer(JudgeConfig(base_url=stub.base_url, model="judge", max_retries=0))
    assert scorer.score([(ANGRY, "angry", GOOD)]) == [0.0]
    with pytest.raises(ValueError, match="http"):
        JudgeScorer(JudgeConfig(base_url="ftp://127.0.0.1/v1"))
    built = build_scorer(RLConfig(reasoning_scorer="judge",
                                  judge=JudgeConfig(base_url=stub.base_url, max_retries=0)))
    assert isinstance(built, JudgeScorer)


# ---------------------------------------------------------------- trained scorer

@pytest.fixture(scope="module")
def tiny_scorer(tmp_path_factory):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    from components.models.bundled import resolve_model

    folder = tmp_path_factory.mktemp("scorer")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("bundled:smollm2-135m-instruct"))
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(LlamaConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
        intermediate_size=64, vocab_size=len(tokenizer), max_position_embeddings=1024,
        num_labels=1, pad_token_id=tokenizer.pad_token_id))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_model_scorer_is_a_deterministic_squashed_regression(tiny_scorer):
    scorer = build_scorer(RLConfig(reasoning_scorer="model", reasoning_model=str(tiny_scorer)))
    assert isinstance(scorer, ModelScorer)
    items = [(ANGRY, "angry", GOOD), (ANGRY, "sad", "It is quiet and slow."), (ANGRY, "angry", ""),
             (ANGRY, "angry", GOOD)]
    values = scorer.score(items)
    assert all(0.0 < v < 1.0 for v in values[:2]) and values[2] == 0.0
    assert values[0] != values[1]
    assert values[0] == values[3] == scorer.score(items[:1])[0]  # batching changes nothing
    clone = pickle.loads(pickle.dumps(scorer))
    assert len(pickle.dumps(scorer)) < 1000  # pickles as its path, not its weights
    assert clone.score(items) == values


def test_model_scorer_refuses_a_missing_folder_or_a_classifier(tmp_path, tiny_scorer):
    from transformers import AutoConfig

    with pytest.raises(ValueError, match="no scorer model folder"):
        ModelScorer(tmp_path / "missing")
    config = AutoConfig.from_pretrained(tiny_scorer)
    config.num_labels = 3
    two = tmp_path / "classifier"
    two.mkdir()
    for f in tiny_scorer.iterdir():
        (two / f.name).write_bytes(f.read_bytes())
    config.save_pretrained(two)
    with pytest.raises(ValueError, match="3 outputs"):
        ModelScorer(two)
