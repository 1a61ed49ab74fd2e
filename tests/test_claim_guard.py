"""The claim guard: a token that would add a cue claim the measurement does not support is
banned, the next most likely token is checked, and a guarded model's rationales claim nothing
against the measured levels while its labels stay the same."""
import pytest
import torch

from components.serve.claim_guard import ClaimGuard, clip_levels, misgrounded


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from components.models.bundled import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("bundled:smollm2-135m-instruct"))


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def token(tokenizer, text: str) -> int:
    (one,) = ids(tokenizer, text)
    return one


NORMAL_ENERGY = {"energy_level": "normal", "rate_level": "fast", "pitch_level": "high",
                 "intonation": None}


def test_misgrounded_counts_claims_against_the_measurement():
    cues = clip_levels(NORMAL_ENERGY)
    assert cues.levels == {"energy_level": "normal", "rate_level": "fast", "pitch_level": "high"}
    assert misgrounded("The voice is loud and the pace is fast.", cues) == 1      # loud
    assert misgrounded("The voice is not loud and the pace is fast.", cues) == 0  # negated
    assert misgrounded("The pitch is high and the pace is fast.", cues) == 0
    assert misgrounded("The pitch is low, the pace is slow.", cues) == 2
    assert misgrounded("The contour rises at the end.", cues) == 1                # unmeasured
    assert misgrounded("", cues) == 0


def test_a_token_that_would_claim_against_the_measurement_is_banned(tokenizer):
    loud, soft, moderate = (token(tokenizer, w) for w in (" loud", " soft", " moderate"))
    prompt = ids(tokenizer, "Prompt here.")
    row = prompt + ids(tokenizer, "The pitch is high and the voice is")
    scores = torch.zeros(2, len(tokenizer) + 5)        # scores may be wider than the tokenizer
    scores[:, loud], scores[:, soft], scores[:, moderate] = 9.0, 8.0, 7.0
    cues = [clip_levels(NORMAL_ENERGY), clip_levels({"energy_level": "high"})]
    guard = ClaimGuard(tokenizer, cues, prompt_len=len(prompt))
    out = guard(torch.tensor([row, row]), scores.clone())
    # row 0 measured normal energy: "loud" and "soft" are banned, "moderate" is now the argmax
    assert out[0, loud] == out[0, soft] == -float("inf") and out[0].argmax() == moderate
    # row 1 measured loud: its argmax stands and nothing is banned
    assert torch.equal(out[1], scores[1])


def test_claims_in_the_prompt_and_levels_left_unmeasured_do_not_ban(tokenizer):
    loud = token(tokenizer, " loud")
    prompt = ids(tokenizer, "Caption: energy loud, pitch low.")   # the prompt is not read
    scores = torch.zeros(1, len(tokenizer))
    scores[0, loud] = 5.0
    no_levels = ClaimGuard(tokenizer, [clip_levels({})], prompt_len=len(prompt))
    row = torch.tensor([prompt + ids(tokenizer, "The voice is")])
    assert torch.equal(no_levels(row, scores.clone()), scores)     # nothing measured: no guard
    guard = ClaimGuard(tokenizer, [clip_levels({"energy_level": "high"})], len(prompt))
    assert torch.equal(guard(row, scores.clone()), scores)


def test_a_guard_with_cues_for_another_batch_or_no_candidates_is_refused(tokenizer):
    guard = ClaimGuard(tokenizer, [clip_levels(NORMAL_ENERGY)], prompt_len=0)
    with pytest.raises(ValueError, match="cues for 1 rows, the batch has 2"):
        guard(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, len(tokenizer)))
    with pytest.raises(ValueError, match="at least one candidate"):
        ClaimGuard(tokenizer, [], prompt_len=0, candidates=0)


def test_bad_claim_guard_settings_are_refused():
    from components.config import ConfigError, params_from_dict

    with pytest.raises(ConfigError, match="inference.claim_guard: expected true or false"):
        params_from_dict({"inference": {"claim_guard": "yes"}})


def test_a_model_pushed_to_claim_loud_says_what_was_measured_instead(tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM, LogitsProcessor, LogitsProcessorList

    from tests.tiny_models import save_tiny_lm

    lm = AutoModelForCausalLM.from_pretrained(save_tiny_lm(tmp_path / "lm")).eval()
    loud, moderate = token(tokenizer, " loud"), token(tokenizer, " moderate")

    class Push(LogitsProcessor):
        """A model that wants to call every voice loud (moderate is its second choice)."""

        def __call__(self, input_ids, scores):
            scores[:, loud] += 100.0
            scores[:, moderate] += 50.0
            return scores

    prompt = torch.tensor([ids(tokenizer, "Rationale: the voice is")])
    cues = clip_levels({"energy_level": "normal"})

    def rationale(*guard):
        out = lm.generate(prompt, max_new_tokens=6, do_sample=False,
                          logits_processor=LogitsProcessorList([Push(), *guard]))
        return "the voice is" + tokenizer.decode(out[0, prompt.shape[1]:])

    plain = rationale()
    guarded = rationale(ClaimGuard(tokenizer, [cues], prompt_len=prompt.shape[1]))
    assert "loud" in plain and misgrounded(plain, cues) > 0
    assert "loud" not in guarded and "moderate" in guarded and misgrounded(guarded, cues) == 0


@pytest.mark.slow
def test_the_predictor_and_the_served_model_guard_claims_without_moving_labels(trained,
                                                                                pipeline):
    import mlflow

    from components.serve.predictor import clips_from_features, frames_of, load_predictor
    from components.serve.pyfunc import EmoReasonModel

    root, df, feats, *_ = pipeline
    rows = feats[feats["utt_id"].isin(df[df["split"] == "test"]["utt_id"])].head(4)
    plain = load_predictor(trained, max_new_tokens=24)
    guarded = load_predictor(trained, max_new_tokens=24, claim_guard=True)
    assert guarded.claim_guard and not plain.claim_guard
    clips = clips_from_features(rows, frames_of(root / "features" / "frames",
                                                rows["utt_id"].tolist()), plain)
    (guard,) = guarded._processors(torch.zeros(4, 7, dtype=torch.long), clips)
    assert isinstance(guard, ClaimGuard) and guard.prompt_len == 7
    assert [c.levels for c in guard.cues] == [clip_levels(c.cues).levels for c in clips]
    assert all(c.levels for c in guard.cues)            # the features measured every clip
    answers = guarded.predict_clips(clips, rationale=True, batch_size=4)
    first = plain.predict_clips(clips, rationale=True, batch_size=4)
    assert [a["label"] for a in answers] == [a["label"] for a in first]   # scored first
    assert all(misgrounded(a["rationale"] or "", clip_levels(c.cues)) == 0
               for a, c in zip(answers, clips))
    served = EmoReasonModel()
    served.load_context(mlflow.pyfunc.PythonModelContext(
        {"model": str(trained)}, {"claim_guard": True}))
    assert served.predictor.claim_guard
