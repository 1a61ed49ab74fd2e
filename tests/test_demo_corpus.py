"""The synthetic demo corpus: real eSpeak NG audio, deterministic, with emotion in the prosody."""
import collections
import dataclasses
import json
import shutil

import numpy as np
import parselmouth
import pytest
import soundfile as sf

from components.config import DemoConfig
from components.prepare.demo import espeak
from components.prepare.demo.corpus import (
    RATERS, SENTENCES, SPEC_FILE, generate_demo_corpus, plan_corpus,
)

SMALL = DemoConfig(
    n_clips=24, n_speakers=4, emotions=["neutral", "happy", "sad", "angry", "fear", "surprise"],
    annotators_min=3, annotators_max=6,
)
SEED = 7


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    audio_dir = tmp_path_factory.mktemp("demo")
    return audio_dir, generate_demo_corpus(audio_dir, SMALL, SEED, progress=False)


def _wav_files(audio_dir):
    return sorted(p.relative_to(audio_dir).as_posix() for p in audio_dir.rglob("*.wav"))


def _f0_median(audio, sr):
    f0 = parselmouth.Sound(audio.astype(np.float64), sr).to_pitch().selected_array["frequency"]
    return float(np.median(f0[f0 > 0]))


def test_records_describe_every_clip(small_corpus):
    audio_dir, corpus = small_corpus
    utts = corpus.utterances
    assert len(utts) == SMALL.n_clips
    assert len({u.utt_id for u in utts}) == SMALL.n_clips
    assert {u.gender for u in utts} == {"female", "male"}
    assert len({u.speaker for u in utts}) == SMALL.n_speakers
    for u in utts:
        assert u.audio_path == f"{u.speaker}/{u.utt_id}.wav"
        assert SMALL.annotators_min <= len(u.votes) <= SMALL.annotators_max
        assert len({rater for rater, _ in u.votes}) == len(u.votes)
        assert all(rater in RATERS and label in SMALL.emotions for rater, label in u.votes)
        assert any(u.transcript in pool for pool in SENTENCES.values())
        assert u.consensus_code is None and u.split is None
    assert _wav_files(audio_dir) == sorted(u.audio_path for u in utts)


def test_files_are_non_silent_pcm_at_the_configured_rate(small_corpus):
    audio_dir, corpus = small_corpus
    for u in corpus.utterances:
        info = sf.info(audio_dir / u.audio_path)
        assert (info.samplerate, info.channels, info.subtype) == (SMALL.sample_rate, 1, "PCM_16")
        audio, _ = sf.read(audio_dir / u.audio_path, dtype="float32")
        assert 1.0 < len(audio) / SMALL.sample_rate < 8.0
        assert np.sqrt(np.mean(audio**2)) > 0.01


def test_same_seed_gives_identical_records_and_bytes(small_corpus, tmp_path):
    audio_dir, corpus = small_corpus
    again = generate_demo_corpus(tmp_path / "again", SMALL, SEED, progress=False)
    assert again == corpus
    for u in corpus.utterances:
        assert (tmp_path / "again" / u.audio_path).read_bytes() == (
            audio_dir / u.audio_path
        ).read_bytes()

    other = generate_demo_corpus(tmp_path / "other", SMALL, SEED + 1, progress=False)
    assert [u.votes for u in other.utterances] != [u.votes for u in corpus.utterances]
    assert [u.transcript for u in other.utterances] != [u.transcript for u in corpus.utterances]
    first = corpus.utterances[0].audio_path
    assert other.utterances[0].audio_path != first or (
        (tmp_path / "other" / first).read_bytes() != (audio_dir / first).read_bytes()
    )


def test_synthesis_does_not_depend_on_what_was_spoken_before():
    prosody = espeak.Prosody(rate=170, pitch=50, pitch_range=50, volume=100, word_gap=0)
    first, sr = espeak.synthesize("The bus stops here.", "en+f2", prosody, seed=3)
    espeak.synthesize("Something else entirely, and longer.", "en+m3", prosody, seed=9)
    again, _ = espeak.synthesize("The bus stops here.", "en+f2", prosody, seed=3)
    assert sr == 22050 and first.dtype == np.int16
    np.testing.assert_array_equal(first, again)


def test_angry_is_louder_and_higher_than_sad_for_every_speaker(small_corpus):
    audio_dir, _ = small_corpus
    by_speaker = collections.defaultdict(dict)
    for plan in plan_corpus(SMALL, SEED):
        if plan.emotion in ("angry", "sad"):
            audio, sr = sf.read(audio_dir / plan.audio_path, dtype="float32")
            rms = float(np.sqrt(np.mean(audio**2)))
            by_speaker[plan.speaker.id][plan.emotion] = (rms, _f0_median(audio, sr))
    assert len(by_speaker) == SMALL.n_speakers
    for speaker, cues in by_speaker.items():
        (angry_rms, angry_f0), (sad_rms, sad_f0) = cues["angry"], cues["sad"]
        assert angry_rms > 1.5 * sad_rms, speaker
        assert angry_f0 > 1.1 * sad_f0, speaker


def test_incongruent_clips_say_words_of_another_emotion(small_corpus):
    _, corpus = small_corpus
    plans = plan_corpus(SMALL, SEED)
    transcripts = {u.utt_id: u.transcript for u in corpus.utterances}
    incongruent = [p for p in plans if p.incongruent]
    assert len(incongruent) == round(SMALL.incongruent_share * SMALL.n_clips)
    for plan in incongruent:
        assert plan.text_emotion not in ("neutral", plan.emotion)
        assert transcripts[plan.utt_id] in SENTENCES[plan.text_emotion]
        assert transcripts[plan.utt_id] not in SENTENCES[plan.emotion]
    neutral_words = [p for p in plans if p.text in SENTENCES["neutral"]]
    assert len(neutral_words) >= round(SMALL.neutral_text_share * SMALL.n_clips)

    congruent = dataclasses.replace(SMALL, incongruent_share=0.0)
    assert not any(p.incongruent for p in plan_corpus(congruent, SEED))


def test_annotators_mostly_agree_with_the_prosody_but_not_always():
    cfg = dataclasses.replace(
        SMALL, n_clips=300, n_speakers=10, annotators_min=5, annotators_max=7,
        incongruent_share=0.2, neutral_text_share=0.4,
    )
    plans = plan_corpus(cfg, 1234)
    ties = majority_right = 0
    for plan in plans:
        counts = collections.Counter(label for _, label in plan.votes).most_common()
        tied = len(counts) > 1 and counts[0][1] == counts[1][1]
        ties += tied
        majority_right += (not tied) and counts[0][0] == plan.emotion
    assert 0.04 <= ties / len(plans) <= 0.16
    assert 0.75 <= majority_right / len(plans) <= 0.92
    assert len({rater for plan in plans for rater, _ in plan.votes}) == len(RATERS)


def test_cache_reuses_files_and_a_changed_config_regenerates(tmp_path):
    cfg = dataclasses.replace(SMALL, n_clips=10)
    first = generate_demo_corpus(tmp_path, cfg, SEED, progress=False)
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.wav")}
    assert json.loads((tmp_path / SPEC_FILE).read_text())["complete"] is True

    assert generate_demo_corpus(tmp_path, cfg, SEED, progress=False) == first
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.wav")} == mtimes

    changed = dataclasses.replace(cfg, n_clips=7, sample_rate=8000)
    second = generate_demo_corpus(tmp_path, changed, SEED, progress=False)
    assert _wav_files(tmp_path) == sorted(u.audio_path for u in second.utterances)
    assert all(sf.info(tmp_path / u.audio_path).samplerate == 8000 for u in second.utterances)

    missing = tmp_path / second.utterances[0].audio_path
    missing.unlink()
    generate_demo_corpus(tmp_path, changed, SEED, progress=False)
    assert missing.is_file()


def test_corrupt_spec_is_a_clear_error(tmp_path):
    (tmp_path / SPEC_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="demo_spec.json is unreadable"):
        generate_demo_corpus(tmp_path, SMALL, SEED, progress=False)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"emotions": ["neutral", "joy"]}, "unknown emotion 'joy'"),
        ({"annotators_max": 20}, "annotators_min/max"),
        ({"incongruent_share": 0.7, "neutral_text_share": 0.5}, "sum to at most 1"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        generate_demo_corpus(tmp_path, dataclasses.replace(SMALL, **change), SEED)
    assert not any(tmp_path.iterdir())


def test_unknown_voice_is_a_clear_error():
    with pytest.raises(espeak.SynthesisError, match="no voice 'xx-nonexistent'"):
        espeak.synthesize("Hello.", "xx-nonexistent", espeak.Prosody(170, 50, 50, 100, 0))


def test_missing_library_and_program_is_a_clear_error(monkeypatch, tmp_path):
    import espeakng_loader

    monkeypatch.setattr(espeak, "_backend", None)
    monkeypatch.setattr(espeakng_loader, "get_library_path", lambda: str(tmp_path / "none.so"))
    monkeypatch.setattr(espeak.shutil, "which", lambda name: None)
    with pytest.raises(espeak.SynthesisError, match="eSpeak NG is not available"):
        espeak.backend()


@pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="no espeak-ng program on PATH to compare with"
)
def test_program_fallback_renders_like_the_library():
    program = espeak.ProgramBackend(shutil.which("espeak-ng"))
    text = "The meeting has been moved to Thursday afternoon, and we are all glad about it."
    spreads = {}
    for pitch_range in (10, 90):
        prosody = espeak.Prosody(175, 50, pitch_range, 100, 0)
        audio = program.synthesize(text, "en+m3", prosody, seed=0).astype(np.float64) / 32768
        f0 = parselmouth.Sound(audio, program.sample_rate).to_pitch().selected_array["frequency"]
        spreads[pitch_range] = np.ptp(np.percentile(f0[f0 > 0], [5, 95]))
    library, sr = espeak.synthesize(text, "en+m3", prosody)
    assert program.sample_rate == sr
    assert spreads[90] > 2 * spreads[10]
    assert abs(len(audio) - len(library)) < 0.1 * len(library)
