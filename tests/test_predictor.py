"""The serving predictor: label probabilities by scoring, the reported label is their argmax,
batches answer as clips one by one, and the encoder's own classifier is kept with the model."""
import contextlib
import json

import numpy as np
import pytest
import torch

from components.serve.predictor import clips_from_features, frames_of, load_predictor
from components.speechlm.encoders import collate_frames
from components.speechlm.pretrain import CLASSIFIER_FILE, EncoderClassifier

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def predictor(trained):
    return load_predictor(trained, max_new_tokens=12)


@pytest.fixture(scope="module")
def clips(pipeline, predictor):
    root, df, feats, *_ = pipeline
    rows = feats[feats["utt_id"].isin(df[df["split"] == "test"]["utt_id"])].head(5)
    frames = frames_of(root / "features" / "frames", rows["utt_id"].tolist())
    return rows, clips_from_features(rows, frames, predictor)


@torch.no_grad()
def reference_probabilities(predictor, clip) -> np.ndarray:
    """Each label's continuation scored as a whole sequence, one label at a time."""
    audio, n_frames = predictor._audio([clip])
    prompt = predictor._prompt_ids(clip, n_frames[0])
    shared = predictor.tokenizer("Emotion:", add_special_tokens=False)["input_ids"]
    scores = []
    for label in predictor.labels:
        ids = prompt + predictor.tokenizer(f"Emotion: {label}",
                                           add_special_tokens=False)["input_ids"]
        logp = predictor.model(input_ids=torch.tensor([ids]), **audio).logits[0].log_softmax(-1)
        start = len(prompt) + len(shared)
        scores.append(sum(float(logp[i - 1, ids[i]]) for i in range(start, len(ids))))
    return (torch.tensor(scores) / predictor.label_temperature).softmax(-1).numpy()


def test_probabilities_are_the_labels_scores_and_the_label_is_their_argmax(predictor, clips):
    _, inputs = clips
    results = predictor.predict_clips(inputs, rationale=False)
    for clip, result in zip(inputs, results):
        probs = np.array([result["probabilities"][name] for name in predictor.labels])
        np.testing.assert_allclose(probs, reference_probabilities(predictor, clip), atol=1e-4)
        assert probs.sum() == pytest.approx(1.0, abs=1e-5)
        assert result["label"] == predictor.labels[int(probs.argmax())]
        assert result["rationale"] is None and result["well_formed"] is None
        assert result["output"] == f"Emotion: {result['label']}"


def test_batches_answer_as_clips_one_by_one_and_the_rationale_follows_the_label(
        predictor, clips):
    _, inputs = clips
    together = predictor.predict_clips(inputs, rationale=True, batch_size=5)
    alone = [predictor.predict_clips([c], rationale=True)[0] for c in inputs]
    for a, b in zip(together, alone):
        assert a["label"] == b["label"] and a["output"] == b["output"]
        for name in predictor.labels:
            assert a["probabilities"][name] == pytest.approx(b["probabilities"][name], abs=1e-4)
        assert a["output"].startswith(f"Emotion: {a['label']}")
        assert a["cues"]["energy_level"] in ("low", "normal", "high")


def test_scoring_in_the_generate_call_answers_as_scoring_first(predictor, clips, monkeypatch):
    """The labels scored in the first step of the rationale's generate call: the same
    probabilities, label and text as a scoring pass of their own and a second generation."""
    _, inputs = clips
    predictor.score_in_generate = False
    try:
        apart = predictor.predict_clips(inputs, rationale=True, batch_size=5)
    finally:
        predictor.score_in_generate = True

    def refuse(*_args):
        raise AssertionError("the labels were scored in a pass of their own")

    monkeypatch.setattr(predictor, "_score", refuse)
    fused = predictor.predict_clips(inputs, rationale=True, batch_size=5)
    for a, b in zip(fused, apart):
        assert a["label"] == b["label"] and a["output"] == b["output"]
        assert a["label"] == max(a["probabilities"], key=a["probabilities"].get)
        for name in predictor.labels:
            assert a["probabilities"][name] == pytest.approx(b["probabilities"][name], abs=1e-4)


def test_an_allowed_label_subset_renormalises_and_the_rationale_follows_it(predictor, clips):
    """Cross-corpus evaluation lets a model answer only the labels it shares with the corpus:
    the others get 0, the rest keep their ratios, and the rationale (scored in the generate
    call or apart) follows the allowed label chosen."""
    _, inputs = clips
    free = predictor.predict_clips(inputs, rationale=False, batch_size=5)
    dropped = free[0]["label"]
    allowed = [x for x in predictor.labels if x != dropped]
    predictor.allow(allowed)
    try:
        fused = predictor.predict_clips(inputs, rationale=True, batch_size=5)
        predictor.score_in_generate = False
        apart = predictor.predict_clips(inputs, rationale=True, batch_size=5)
    finally:
        predictor.score_in_generate = True
        predictor.allow(None)
    for before, a, b in zip(free, fused, apart):
        kept = {x: before["probabilities"][x] for x in allowed}
        total = sum(kept.values())
        assert a["probabilities"][dropped] == 0.0
        for x in allowed:
            assert a["probabilities"][x] == pytest.approx(kept[x] / total, abs=1e-4)
        assert a["label"] == max(kept, key=kept.get) != dropped
        assert a["label"] == b["label"] and a["output"] == b["output"]
        assert a["output"].startswith(f"Emotion: {a['label']}")
    assert fused[0]["label"] != free[0]["label"]
    assert predictor.predict_clips(inputs[:1], rationale=False)[0]["label"] == dropped
    with pytest.raises(ValueError, match="not known: \\['joy'\\]"):
        predictor.allow(["joy", *allowed])
    with pytest.raises(ValueError, match="non-empty subset"):
        predictor.allow([])


def test_the_folders_label_temperature_divides_the_scores_and_keeps_the_label(
        trained, clips, tmp_path):
    import shutil

    from components.speechlm.io import set_label_temperature

    answers = {}
    for temperature in (None, 4.0):
        folder = tmp_path / f"t{temperature}"
        shutil.copytree(trained, folder)
        set_label_temperature(folder, temperature)
        answers[temperature] = load_predictor(folder).predict_clips(clips[1], rationale=False)
    for raw, flat in zip(answers[None], answers[4.0]):
        p = np.array([raw["probabilities"][x] for x in sorted(raw["probabilities"])])
        q = np.array([flat["probabilities"][x] for x in sorted(flat["probabilities"])])
        np.testing.assert_allclose(q, p ** 0.25 / (p ** 0.25).sum(), rtol=1e-4, atol=1e-6)
        assert flat["label"] == raw["label"] and q.max() < p.max()


def test_reason_first_models_score_the_label_after_their_reasoning(trained, clips, tmp_path):
    import shutil

    folder = tmp_path / "reason_first"
    shutil.copytree(trained, folder, ignore=shutil.ignore_patterns("checkpoints"))
    task = json.loads((folder / "task.json").read_text())
    (folder / "task.json").write_text(json.dumps({**task, "format": "reason_first"}))
    model = load_predictor(folder, max_new_tokens=8)
    results = model.predict_clips(clips[1], rationale=True)
    for result in results:
        assert result["label"] in model.labels
        assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert result["label"] == max(result["probabilities"], key=result["probabilities"].get)


def test_the_warmed_up_encoder_and_its_head_are_kept_and_classify(trained, clips):
    assert (trained / CLASSIFIER_FILE).exists()
    classifier = EncoderClassifier.load(trained)
    _, inputs = clips
    values, mask = collate_frames([c.frames for c in inputs])
    probs = classifier.predict_proba({
        "audio_values": values, "audio_mask": mask,
        "prosody_values": torch.from_numpy(np.stack([c.prosody for c in inputs]))})
    assert probs.shape == (len(inputs), len(classifier.labels))
    torch.testing.assert_close(probs.sum(-1), torch.ones(len(inputs)))
    assert classifier.labels == json.loads((trained / "task.json").read_text())["labels"]
    with pytest.raises(FileNotFoundError, match="encoder warm-up"):
        EncoderClassifier.load(trained.parent)


@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_serving_dtypes_answer_from_an_adapter_folder(trained, clips, dtype):
    warned = (pytest.warns(UserWarning, match="int8 damages the answers") if dtype == "int8"
              else contextlib.nullcontext())
    with warned:
        model = load_predictor(trained, max_new_tokens=6, dtype=dtype)
    assert not model.model.has_lora  # merged before casting
    results = model.predict_clips(clips[1][:2], rationale=True)
    for result in results:
        assert result["label"] in model.labels
        assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError, match="serving dtype"):
        load_predictor(trained, dtype="float16")


def test_a_given_transcript_replaces_speech_recognition(predictor, pipeline, monkeypatch):
    """A client's transcript is the clip's transcript and is what the prompt reads; only the
    clips without one are transcribed."""
    from components.audio_io import read_audio
    from components.features import extract

    heard = []

    class Recorder:
        concurrent = True

        def transcribe(self, audio):
            heard.append(len(audio))
            return "recognised words", 0.5

    monkeypatch.setattr(extract, "_transcriber", lambda spec, pid: Recorder())
    root, df, *_ = pipeline
    audio = [read_audio(root / "audio" / path, 16000)[0] for path in df["audio_path"][:2]]
    measured = predictor.measure_audio(audio, transcripts=["kids are talking by the door", None])
    assert [m.transcript for m in measured] == ["kids are talking by the door",
                                                "recognised words"]
    assert heard == [len(audio[1])]
    answer = predictor.predict_audio(audio[:1], rationale=False,
                                     transcripts=["kids are talking by the door"])[0]
    assert answer["transcript"] == "kids are talking by the door" and len(heard) == 1


def test_served_clips_get_the_features_stages_frames_without_a_second_f0_track(
        predictor, pipeline, monkeypatch):
    """A named speaker's clips measured at serving time get the frame features the features
    stage stored for them (same F0 track, same float16 precision), and the encoder does not
    featurize the audio again."""
    from components.audio_io import read_audio

    root, df, *_ = pipeline
    speaker = df["speaker"].iloc[0]
    rows = df[df["speaker"] == speaker]
    audio = [read_audio(root / "audio" / path, 16000)[0] for path in rows["audio_path"]]
    measured = predictor.measure_audio(audio, speakers=[speaker] * len(audio),
                                       transcripts=rows["transcript"].tolist())
    stored = frames_of(root / "features" / "frames", rows["utt_id"].tolist())
    for clip, utt in zip(measured, rows["utt_id"]):
        assert clip.frames.dtype == np.float32
        np.testing.assert_array_equal(clip.frames, stored[utt])

    def refuse(_audio):
        raise AssertionError("the encoder featurized audio whose frames were measured")

    monkeypatch.setattr(predictor.model, "featurize", refuse)
    answer = predictor.predict_audio(audio[:1], rationale=False, speakers=[speaker],
                                     transcripts=rows["transcript"].tolist()[:1])[0]
    assert answer["label"] in predictor.labels


def test_the_prompt_prefix_is_encoded_once_and_changes_no_score(predictor, clips):
    """Rows of different lengths read the shared system turn from one cache, padded between it
    and the rest: the logits equal those of the whole prompts, and the cache is not used up."""
    _, inputs = clips
    prompts, audio = predictor.chat_inputs(inputs[:3])
    assert len({len(p) for p in prompts}) > 1  # padding sits between prefix and rest
    prefix, _ = predictor._prefix_cache()
    assert len(prefix) > 10 and predictor.model.config.audio_token_id not in prefix
    assert all(p[:len(prefix)] == prefix for p in prompts)
    cached = predictor._next_token_logits(prompts, audio)
    torch.testing.assert_close(predictor._next_token_logits(prompts, audio), cached)
    predictor.prefix_cache = False  # whole prompts
    try:
        whole = predictor._next_token_logits(prompts, audio)
    finally:
        predictor.prefix_cache = True
    torch.testing.assert_close(cached, whole, atol=1e-4, rtol=1e-4)


def test_served_prompts_are_the_training_prompts_with_the_caption(pipeline, predictor, clips):
    """A clip's served SER prompt is token for token the one SFT trained on, the measured
    levels in words included (`sft.prosody_caption`, recorded in task.json); a folder trained
    without the caption is served without it."""
    from components.speechlm.collate import SpeechCollator
    from components.speechlm.sft_data import SftDataConfig, build_sft_examples

    root, df, feats, records, labels, _ = pipeline
    rows, inputs = clips
    assert json.loads((predictor.folder / "task.json").read_text())["prosody_caption"] is True
    examples = {e["utt_id"]: e for e in build_sft_examples(
        feats, df, records, SftDataConfig(perception_ratio=0, splits=["test"],
                                          prosody_caption=True))}
    from types import SimpleNamespace

    collator = SpeechCollator(predictor.tokenizer, SimpleNamespace(model=predictor.model),
                              predictor.labels)
    compared = [(u, c) for u, c in zip(rows["utt_id"], inputs) if u in examples]
    assert compared  # clips without a consensus label have no SFT example
    for utt_id, clip in compared:
        n = len(clip.frames)
        served = predictor._prompt_ids(clip, n)
        assert served == collator.prompt_ids(examples[utt_id], n)
        assert f"How it is said: {clip.caption}" in predictor.tokenizer.decode(served)
    predictor.with_caption = False
    try:
        assert "How it is said" not in predictor.tokenizer.decode(
            predictor._prompt_ids(inputs[0], len(inputs[0].frames)))
    finally:
        predictor.with_caption = True
