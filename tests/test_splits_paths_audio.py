"""Speaker-independent splits, data-root path safety and audio decoding of any format."""
import numpy as np
import pytest
import soundfile as sf

from components.audio_io import AudioReadError, probe, read_audio
from components.config import SplitConfig
from components.paths import UnsafePathError, relative_audio_path, resolve_audio_path
from components.prepare.splits import assign_speaker_splits


def _speakers(n_female, n_male):
    spk = {f"f{i}": "female" for i in range(n_female)}
    spk.update({f"m{i}": "male" for i in range(n_male)})
    return spk


def test_splits_are_deterministic_balanced_by_gender_and_cover_everyone():
    speakers = _speakers(6, 6)
    a = assign_speaker_splits(speakers, SplitConfig(), seed=7)
    assert a == assign_speaker_splits(speakers, SplitConfig(), seed=7)
    assert set(a) == set(speakers)
    for gender in ("female", "male"):
        splits = [a[s] for s, g in speakers.items() if g == gender]
        assert splits.count("test") == 1 and splits.count("dev") == 1 and splits.count("train") == 4
    others = [assign_speaker_splits(speakers, SplitConfig(), seed=s) for s in range(5)]
    assert any(o != a for o in others)


def test_small_groups_keep_train_and_bad_ratios_fail():
    a = assign_speaker_splits(_speakers(2, 1), SplitConfig(), seed=0)
    assert "train" in a.values()
    assert list(a.values()).count("train") >= 2
    with pytest.raises(ValueError, match="train must be positive"):
        assign_speaker_splits(_speakers(3, 3), SplitConfig(train=0), seed=0)


def test_paths_outside_the_root_are_refused(tmp_path):
    (tmp_path / "a").mkdir()
    assert relative_audio_path(tmp_path / "a" / "x.wav", tmp_path) == "a/x.wav"
    assert resolve_audio_path("a/x.wav", tmp_path) == (tmp_path / "a" / "x.wav").resolve()
    for bad in ["../x.wav", "a/../../x.wav", "/etc/passwd", ""]:
        with pytest.raises(UnsafePathError):
            resolve_audio_path(bad, tmp_path)
    with pytest.raises(UnsafePathError):
        relative_audio_path(tmp_path.parent / "x.wav", tmp_path)
    (tmp_path / "link").symlink_to(tmp_path.parent)
    with pytest.raises(UnsafePathError, match="escapes"):
        resolve_audio_path("link/x.wav", tmp_path)


def test_read_audio_resamples_and_downmixes(tmp_path):
    t = np.arange(48000) / 48000
    tone = 0.5 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    sf.write(tmp_path / "stereo48k.wav", np.stack([tone, tone], axis=1), 48000)
    sf.write(tmp_path / "mono16k.wav", tone[::3], 16000)
    a, sr = read_audio(tmp_path / "stereo48k.wav", 16000)
    b, _ = read_audio(tmp_path / "mono16k.wav", 16000)
    assert sr == 16000 and a.shape == b.shape == (16000,)
    assert np.corrcoef(a[100:-100], b[100:-100])[0, 1] > 0.99
    assert probe(tmp_path / "stereo48k.wav") == (1.0, 48000, 2)


def test_bad_audio_raises_a_clear_error(tmp_path):
    (tmp_path / "text.wav").write_text("not audio")
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    for name in ("text.wav", "empty.wav", "missing.wav"):
        with pytest.raises(AudioReadError):
            read_audio(tmp_path / name)


def test_named_test_and_dev_speakers_are_kept_and_the_rest_is_drawn():
    speakers = {f"Actor_{i:02d}": "male" if i % 2 else "female" for i in range(1, 13)}
    cfg = SplitConfig(test_speakers=["Actor_01", "Actor_02", "Actor_03", "Actor_04"])
    a = assign_speaker_splits(speakers, cfg, seed=3)
    assert sorted(s for s, v in a.items() if v == "test") == ["Actor_01", "Actor_02", "Actor_03", "Actor_04"]
    dev = sorted(s for s, v in a.items() if v == "dev")
    assert len(dev) == 2 and {speakers[s] for s in dev} == {"male", "female"}
    cfg = SplitConfig(test_speakers=["Actor_01"], dev_speakers=["Actor_05", "Actor_06"])
    a = assign_speaker_splits(speakers, cfg, seed=3)
    assert [s for s, v in a.items() if v == "dev"] == ["Actor_05", "Actor_06"]
    assert sum(v == "train" for v in a.values()) == 9
    with pytest.raises(ValueError, match="both"):
        assign_speaker_splits(speakers, SplitConfig(test_speakers=["Actor_01"], dev_speakers=["Actor_01"]), 0)
    with pytest.raises(ValueError, match="not in the corpus"):
        assign_speaker_splits(speakers, SplitConfig(test_speakers=["Actor_99"]), 0)
