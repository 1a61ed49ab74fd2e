"""Serving inputs: paths, base64 and bytes in any format, rate and channel count become 16 kHz
mono; every unusable input is an AudioInputError that names the problem; silence is a flag."""
import base64
import io

import numpy as np
import pytest
import soundfile as sf

from components.serve.inputs import (
    SILENT,
    STEREO_CANCELLED,
    AudioInputError,
    audio_bytes,
    audio_format,
    decode_audio,
    decode_audio_checked,
)


def _tone(sr: int, seconds: float = 1.0, f0: float = 220.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * f0 * t)).astype(np.float32)


def _wav_bytes(audio: np.ndarray, sr: int, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def _dominant_hz(audio: np.ndarray, sr: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(audio))
    return float(np.fft.rfftfreq(len(audio), 1 / sr)[np.argmax(spectrum)])


@pytest.mark.parametrize("sr", [8000, 16000, 22050, 48000])
def test_any_rate_becomes_16k_with_the_same_pitch_and_duration(tmp_path, sr):
    path = tmp_path / f"tone{sr}.wav"
    sf.write(path, _tone(sr, 1.0, 440.0), sr)
    audio, flags = decode_audio_checked(path, 60)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 16000) <= 1
    assert abs(_dominant_hz(audio) - 440.0) < 2.0
    assert flags == []
    assert np.array_equal(decode_audio(str(path), 60), audio)  # a str path reads the same


def test_stereo_is_averaged(tmp_path):
    left, right = _tone(48000, 0.5, 300.0), _tone(48000, 0.5, 300.0, amp=0.1)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 48000)
    audio, flags = decode_audio_checked(path, 60)
    assert flags == [] and len(audio) == 8000
    rms = float(np.sqrt(np.mean(audio[1000:-1000] ** 2)))
    assert rms == pytest.approx(0.2 / np.sqrt(2), rel=0.02)  # the mean of 0.3 and 0.1 amplitude


def test_out_of_phase_stereo_is_flagged_and_one_channel_kept(tmp_path):
    tone = _tone(16000, 0.5, 250.0)
    path = tmp_path / "phase.wav"
    sf.write(path, np.stack([tone, -tone], axis=1), 16000, subtype="FLOAT")
    audio, flags = decode_audio_checked(path, 60)
    assert flags == [STEREO_CANCELLED]
    np.testing.assert_allclose(np.abs(audio), np.abs(tone), atol=1e-6)


def test_silence_is_a_flag_not_an_error(tmp_path):
    path = tmp_path / "quiet.wav"
    sf.write(path, np.full(16000, 1e-4, dtype=np.float32) * np.sign(_tone(16000)), 16000,
             subtype="FLOAT")  # -80 dBFS
    audio, flags = decode_audio_checked(path, 60)
    assert flags == [SILENT] and len(audio) == 16000
    sf.write(path, np.stack([np.zeros(8000), np.zeros(8000)], axis=1), 16000)
    assert decode_audio_checked(path, 60)[1] == [SILENT]  # true digital silence: not cancelled


@pytest.mark.parametrize("fmt,subtype,header", [("WAV", "PCM_16", "WAV"),
                                                 ("FLAC", "PCM_16", "FLAC"),
                                                 ("OGG", "VORBIS", "OGG")])
def test_base64_and_bytes_of_any_container(fmt, subtype, header):
    data = _wav_bytes(_tone(22050, 0.8, 330.0), 22050, fmt, subtype)
    assert audio_format(data) == header
    text = base64.b64encode(data).decode()
    audio, flags = decode_audio_checked(text, 60)
    assert abs(len(audio) - int(0.8 * 16000)) <= 2 and flags == []
    assert abs(_dominant_hz(audio) - 330.0) < 3.0
    np.testing.assert_array_equal(decode_audio(data, 60), audio)  # raw bytes
    np.testing.assert_array_equal(decode_audio(f"data:audio/x;base64,{text}", 60), audio)
    urlsafe = base64.urlsafe_b64encode(data).decode().rstrip("=")
    np.testing.assert_array_equal(decode_audio(urlsafe, 60), audio)


def test_a_path_is_not_mistaken_for_base64_and_paths_can_be_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sf.write(tmp_path / "abcd", _tone(16000, 0.2), 16000, format="WAV")  # valid base64 too
    assert len(decode_audio("abcd", 60)) == 3200
    with pytest.raises(AudioInputError, match="not audio"):  # a server never opens it
        audio_bytes("abcd")
    with pytest.raises(AudioInputError, match="file paths are not read here"):
        audio_bytes(str(tmp_path / "abcd"))
    data = _wav_bytes(_tone(16000, 0.2), 16000)
    assert audio_bytes(base64.b64encode(data).decode()) == data
    assert audio_bytes(base64.b64encode(data)) == data == audio_bytes(data)


@pytest.mark.parametrize("value,message", [
    ("/no/such/dir/clip.wav", "no such file"),
    ("/tmp/abcd", "no such file"),  # base64 alphabet, but a path
    ("clip.flac", "no such file"),
    ("hello world!", "neither an existing file nor base64 audio"),
    ("test", "neither an existing file nor base64 audio"),
    (base64.b64encode(b"just some text, certainly not a sound file" * 3).decode(),
     "is not audio"),
    (None, "no audio given"),
    (float("nan"), "no audio given"),
    (b"", "empty audio bytes"),
    (12345, "expected a file path, base64 text or bytes"),
])
def test_unusable_values_say_why(value, message):
    with pytest.raises(AudioInputError, match=message):
        decode_audio_checked(value, 60)


def test_unusable_files_say_why(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioInputError, match="empty file"):
        decode_audio(empty, 60)
    with pytest.raises(AudioInputError, match="no such file"):
        decode_audio(tmp_path / "missing.wav", 60)
    with pytest.raises(AudioInputError, match="not a regular file"):
        decode_audio(tmp_path, 60)
    text = tmp_path / "notes.wav"
    text.write_text("these are not samples\n" * 20)
    with pytest.raises(AudioInputError, match="not audio soundfile can read"):
        decode_audio(text, 60)
    header_only = tmp_path / "zero.wav"
    sf.write(header_only, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioInputError, match="zero samples"):
        decode_audio(header_only, 60)
    corrupt = bytearray(_wav_bytes(_tone(16000, 0.5), 16000))
    corrupt[8:40] = b"\x00" * 32  # RIFF header, broken format chunk
    with pytest.raises(AudioInputError, match="not audio soundfile can read"):
        decode_audio(bytes(corrupt), 60)
    with pytest.raises(AudioInputError, match="not audio soundfile can read"):
        decode_audio(base64.b64encode(bytes(corrupt)).decode(), 60)
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.full(800, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioInputError, match="not finite"):
        decode_audio(nan, 60)


def test_too_long_is_refused_from_the_header_with_the_limit(tmp_path):
    sr = 8000
    rng = np.random.default_rng(0)
    ten_minutes = np.zeros(600 * sr, dtype=np.int16)
    ten_minutes[::7] = rng.integers(-3000, 3000, size=len(ten_minutes[::7]), dtype=np.int16)
    path = tmp_path / "long.wav"
    sf.write(path, ten_minutes, sr, subtype="PCM_16")
    with pytest.raises(AudioInputError, match=r"600\.0 s long; the limit is 60 s"):
        decode_audio(path, 60)
    with pytest.raises(AudioInputError, match="the limit is 30 s"):
        decode_audio(base64.b64encode(_wav_bytes(_tone(sr, 31.0), sr)).decode(), 30)
    assert len(decode_audio(base64.b64encode(_wav_bytes(_tone(sr, 29.0), sr)).decode(), 30)) \
        == 29 * 16000
