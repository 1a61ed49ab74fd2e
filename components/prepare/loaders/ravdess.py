"""RAVDESS speech: the labels live in the file names `MM-VV-EE-II-SS-RR-AA.wav`.

MM modality, VV vocal channel (01 speech, 02 song), EE emotion, II intensity, SS statement,
RR repetition, AA actor (odd male, even female). The emotion is the one the actor was asked to
portray, so it becomes one vote of the annotator "intended" and the consensus code.
"""
import re
from pathlib import Path

from components.paths import relative_audio_path
from components.prepare.loaders.common import finish, require_dir
from components.prepare.records import CorpusLayoutError, LoadedCorpus, RawUtterance

CORPUS = "ravdess"
SPEECH = "01"
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


def load_ravdess(data_dir: Path) -> LoadedCorpus:
    """Every speech .wav under `data_dir` (any depth, any modality code, any sample rate).

    Song files (vocal channel 02) are left out and counted in `problems`, as are names that do
    not follow the 7-field scheme.
    """
    data_dir = require_dir(data_dir, CORPUS)
    wavs = sorted(p for p in data_dir.rglob("*") if p.suffix.lower() == ".wav" and p.is_file())
    if not wavs:
        raise CorpusLayoutError(
            f"{CORPUS}: no .wav files under {data_dir} "
            "(expected Actor_XX/MM-VV-EE-II-SS-RR-AA.wav)"
        )
    utterances, problems, songs = [], [], 0
    for wav in wavs:
        match = _NAME.match(wav.stem)
        if match is None:
            problems.append(
                f"{CORPUS}: skipped {relative_audio_path(wav, data_dir)}: "
                "name is not MM-VV-EE-II-SS-RR-AA.wav"
            )
            continue
        _, channel, emotion, _, statement, _, actor = match.groups()
        if channel != SPEECH:
            songs += 1
            continue
        utterances.append(RawUtterance(
            utt_id=wav.stem,
            audio_path=relative_audio_path(wav, data_dir),
            speaker=f"Actor_{actor}",
            gender="male" if int(actor) % 2 else "female",
            votes=[("intended", emotion)],
            transcript=STATEMENTS.get(statement),
            consensus_code=emotion,
        ))
    if songs:
        problems.append(f"{CORPUS}: left out {songs} song file(s) (vocal channel 02); speech only")
    return finish(CORPUS, utterances, problems)
