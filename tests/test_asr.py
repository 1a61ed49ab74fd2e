"""Transcribers (Moonshine and PocketSphinx offline, Whisper through transformers) and word error rate."""
import numpy as np
import pytest

from components.audio_io import read_audio, resample
from components.features.asr import make_transcriber, normalise_words, word_error_rate
from components.prepare.demo.espeak import Prosody, synthesize
from tests.conftest import require_shared

SR = 16000


@pytest.fixture(scope="module")
def sphinx():
    return make_transcriber("pocketsphinx")


@pytest.fixture(scope="module")
def moonshine():
    return make_transcriber("moonshine")


RAVDESS_SENTENCES = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}


def neutral_ravdess_clips():
    """(reference, audio) of the two neutral statements of actors 1-4."""
    root = require_shared("ravdess-dev")
    return [(RAVDESS_SENTENCES[statement],
             read_audio(root / f"Actor_{actor:02d}" / f"03-01-01-01-{statement}-01-{actor:02d}.wav")[0])
            for actor in (1, 2, 3, 4) for statement in ("01", "02")]


def spoken(text: str) -> np.ndarray:
    samples, sr = synthesize(text, "en-us", Prosody(rate=150, pitch=50, pitch_range=50, volume=100, word_gap=0))
    return resample(samples.astype(np.float32) / 32768.0, sr, SR)


def test_pocketsphinx_transcribes_synthetic_speech_deterministically(sphinx):
    audio = spoken("the dogs are sitting by the door")
    text, confidence = sphinx.transcribe(audio)
    assert isinstance(text, str) and text.strip()
    assert 0.0 < confidence <= 1.0
    sphinx.transcribe(spoken("a different sentence comes in between"))
    again, again_confidence = sphinx.transcribe(audio)
    assert again == text  # what was decoded before does not change the words
    assert again_confidence == pytest.approx(confidence, abs=0.05)


def test_pocketsphinx_on_silence_and_empty_audio(sphinx):
    assert sphinx.transcribe(np.zeros(SR, np.float32)) == ("", 0.0)
    assert sphinx.transcribe(np.zeros(0, np.float32)) == ("", 0.0)
    with pytest.raises(ValueError, match="mono"):
        sphinx.transcribe(np.zeros((SR, 2), np.float32))


@pytest.mark.realdata
def test_pocketsphinx_understands_real_neutral_speech_and_knows_when_not(sphinx):
    errors, confidences = [], []
    for reference, audio in neutral_ravdess_clips():
        text, confidence = sphinx.transcribe(audio)
        assert 0.0 <= confidence <= 1.0
        errors.append(word_error_rate(reference, text))
        confidences.append(confidence)
    assert np.mean(errors) < 0.5, errors
    right = [c for c, e in zip(confidences, errors) if e == 0]
    wrong = [c for c, e in zip(confidences, errors) if e > 0]
    assert right and wrong and np.mean(right) > np.mean(wrong), (errors, confidences)


@pytest.mark.realdata
def test_moonshine_transcribes_real_speech_far_better_than_pocketsphinx(moonshine, sphinx):
    clips = neutral_ravdess_clips()
    heard = [moonshine.transcribe(audio) for _, audio in clips]
    errors = [word_error_rate(reference, text) for (reference, _), (text, _) in zip(clips, heard)]
    sphinx_errors = [word_error_rate(reference, sphinx.transcribe(audio)[0]) for reference, audio in clips]
    assert np.mean(errors) <= 0.1, heard  # measured 0.021 on 40 RAVDESS test clips
    assert np.mean(errors) < np.mean(sphinx_errors) / 2, (errors, sphinx_errors)
    assert all(0.5 < confidence <= 1.0 for _, confidence in heard), heard
    assert moonshine.transcribe(clips[0][1]) == heard[0]  # deterministic, no state across clips


def test_moonshine_on_silence_empty_long_and_bad_audio(moonshine):
    assert moonshine.spec == "moonshine"
    assert moonshine.transcribe(np.zeros(SR, np.float32)) == ("", 0.0)
    assert moonshine.transcribe(np.zeros(0, np.float32)) == ("", 0.0)
    with pytest.raises(ValueError, match="mono"):
        moonshine.transcribe(np.zeros((SR, 2), np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        moonshine.transcribe(np.full(SR, np.nan, np.float32))
    speech = spoken("the dogs are sitting by the door")
    text, confidence = moonshine.transcribe(speech)
    assert text and 0.0 < confidence <= 1.0  # words, whatever they are: never assert eSpeak's
    long_audio = np.tile(speech, int(40 * SR / len(speech)) + 1)  # over 40 s: two 30 s pieces
    long_text, _ = moonshine.transcribe(long_audio)
    assert len(long_text.split()) > 3 * len(text.split()), long_text
    noise = np.random.default_rng(0).normal(0, 0.1, 100).astype(np.float32)
    assert moonshine.transcribe(noise) == ("", 0.0)  # too short for the encoder: no words
    tail = np.concatenate([np.tile(speech, int(30 * SR / len(speech)) + 1)[: 30 * SR], noise])
    assert moonshine.transcribe(tail)[0]  # a 100-sample last piece is skipped, not an error


def test_moonshine_converts_the_bundled_files_once_and_reads_them_back(tmp_path, monkeypatch):
    """The `.ort` graphs become plain ONNX once per content; the copy decodes like the original
    ORT-format session, so the conversion changes speed, not words."""
    import onnxruntime as ort

    from components.features import moonshine as ms

    monkeypatch.setenv("EMOREASON_CACHE", str(tmp_path))
    first = ms.onnx_graphs(ms.bundled_folder(), tmp_path / "moonshine")
    stamps = {k: p.stat().st_mtime_ns for k, p in first.items()}
    assert sorted(p.name.split("-")[0] for p in first.values()) == ["decoder_model_merged", "encoder_model"]
    assert ms.onnx_graphs(ms.bundled_folder(), tmp_path / "moonshine") == first
    assert {k: p.stat().st_mtime_ns for k, p in first.items()} == stamps  # not written again
    audio = spoken("the dogs are sitting by the door")[None]
    original = ort.InferenceSession(str(ms.bundled_folder() / "encoder_model.ort"),
                                    providers=["CPUExecutionProvider"])
    copy = ort.InferenceSession(str(first["encoder_model"]), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(copy.run(None, {"input_values": audio})[0],
                               original.run(None, {"input_values": audio})[0], rtol=1e-3, atol=1e-3)
    decoder = ms.MoonshineDecoder(cache=tmp_path)
    assert decoder.text([ms.BOS, 3 + ord("O"), 3 + ord("k"), ms.EOS]) == "Ok"  # byte tokens
    pieces = ms.read_tokenizer(ms.bundled_folder() / "tokenizer.bin")
    assert len(pieces) == 32000 and pieces[:3] == [b"<unk>", b"<s>", b"</s>"]


def test_a_truncated_moonshine_tokenizer_or_missing_graphs_are_errors(tmp_path):
    from components.features.moonshine import onnx_graphs, read_tokenizer

    (tmp_path / "tokenizer.bin").write_bytes(b"\x05<unk>\x09<s")
    with pytest.raises(ValueError, match="not a Moonshine tokenizer"):
        read_tokenizer(tmp_path / "tokenizer.bin")
    with pytest.raises(FileNotFoundError, match="neither"):
        onnx_graphs(tmp_path, tmp_path / "cache")


def tiny_whisper(folder):
    """A randomly initialised two-layer Whisper with a byte-level tokenizer, saved offline."""
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    tokenizer = WhisperTokenizer(vocab={c: i for i, c in enumerate(bytes_to_unicode().values())}, merges=[])
    specials = ["<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>", "<|notimestamps|>"]
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in ["<|endoftext|>", *specials]}
    end, start = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    config = WhisperConfig(
        vocab_size=len(tokenizer), num_mel_bins=80, d_model=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        max_target_positions=24, pad_token_id=end, bos_token_id=end, eos_token_id=end,
        decoder_start_token_id=start,
    )
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=start, eos_token_id=end, pad_token_id=end, is_multilingual=True,
        lang_to_id={"<|en|>": ids["<|en|>"]},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"], suppress_tokens=[], begin_suppress_tokens=[],
    )
    model.save_pretrained(folder)
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer).save_pretrained(folder)
    return len(tokenizer)


def test_whisper_path_runs_end_to_end_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    vocab = tiny_whisper(tmp_path / "whisper")
    transcriber = make_transcriber(f"whisper:{tmp_path / 'whisper'}")
    assert transcriber.spec == f"whisper:{tmp_path / 'whisper'}"
    audio = np.random.default_rng(0).normal(0, 0.1, SR).astype(np.float32)
    text, confidence = transcriber.transcribe(audio)
    assert isinstance(text, str)
    assert 1.0 / vocab <= confidence <= 1.0  # greedy tokens are argmax: at least 1/V each
    assert transcriber.transcribe(audio) == (text, confidence)
    long_text, long_confidence = transcriber.transcribe(np.tile(audio, 31))  # two 30 s pieces
    assert isinstance(long_text, str) and 1.0 / vocab <= long_confidence <= 1.0


def test_unknown_asr_specs_are_errors():
    for spec in ("kaldi", "whisper", "whisper:", "pocketsphinx:large", "pocketsphinx:", "moonshine:"):
        with pytest.raises(ValueError, match="unknown ASR spec"):
            make_transcriber(spec)


@pytest.mark.parametrize(
    ("ref", "hyp", "expected"),
    [
        ("the cat sat", "the cat sat", 0.0),
        ("Hello, World!", "hello world", 0.0),
        ("the cat sat on the mat", "the cat sit on mat", 2 / 6),
        ("a b", "a x b", 0.5),
        ("a b c d", "", 1.0),
        ("a b", " ?! ", 1.0),  # punctuation only: no words, every reference word deleted
        ("one", "one two three", 2.0),
        ("don't stop", "dont stop", 0.5),
        ("kids are talking by the door", "kids are talking by the door.", 0.0),
    ],
)
def test_word_error_rate(ref, hyp, expected):
    assert word_error_rate(ref, hyp) == pytest.approx(expected)


def test_word_error_rate_needs_a_reference():
    with pytest.raises(ValueError, match="non-empty reference"):
        word_error_rate(" ?! ", "words")
    assert normalise_words("It's 'quoted' -- fine.") == ["it's", "quoted", "fine"]
