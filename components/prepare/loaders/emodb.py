"""EmoDB (Berlin Database of Emotional Speech): the labels live in the file names `SSTTTEV.wav`.

SS speaker, TTT text code, E emotion letter (German initials W L E A F T N), V version letter.
The emotion is the one the actor portrayed: one vote of the annotator "intended" and the
consensus code. Speakers' genders and the ten sentences come from the corpus documentation.
"""
import re
from pathlib import Path

from components.paths import relative_audio_path
from components.prepare.loaders.common import finish, require_dir
from components.prepare.records import CorpusLayoutError, LoadedCorpus, RawUtterance

CORPUS = "emodb"
SPEAKER_GENDERS = {
    "03": "male", "08": "female", "09": "female", "10": "male", "11": "male",
    "12": "male", "13": "female", "14": "female", "15": "male", "16": "female",
}
TEXTS = {
    "a01": "Der Lappen liegt auf dem Eisschrank.",
    "a02": "Das will sie am Mittwoch abgeben.",
    "a04": "Heute abend könnte ich es ihm sagen.",
    "a05": "Das schwarze Stück Papier befindet sich da oben neben dem Holzstück.",
    "a07": "In sieben Stunden wird es soweit sein.",
    "b01": "Was sind denn das für Tüten, die da unter dem Tisch stehen?",
    "b02": "Sie haben es gerade hochgetragen und jetzt gehen sie wieder runter.",
    "b03": "An den Wochenenden bin ich jetzt immer nach Hause gefahren und habe Agnes besucht.",
    "b09": "Ich will das eben wegbringen und dann mit Karl was trinken gehen.",
    "b10": "Die wird auf dem Platz sein, wo wir sie immer hinlegen.",
}
_NAME = re.compile(r"^(\d\d)([a-z]\d\d)([A-Z])([a-z])$")


def load_emodb(data_dir: Path) -> LoadedCorpus:
    """The .wav files in `data_dir/wav` (the corpus's own layout) or, without it, in `data_dir`.

    Unknown speakers get gender 'unknown'; unknown text codes get no transcript; unknown emotion
    letters are passed on for the manifest builder to count.
    """
    data_dir = require_dir(data_dir, CORPUS)
    folder = data_dir / "wav" if (data_dir / "wav").is_dir() else data_dir
    wavs = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".wav" and p.is_file())
    if not wavs:
        raise CorpusLayoutError(
            f"{CORPUS}: no .wav files in {folder} (expected wav/SSTTTEV.wav, e.g. wav/03a01Fa.wav)"
        )
    utterances, problems = [], []
    for wav in wavs:
        match = _NAME.match(wav.stem)
        if match is None:
            problems.append(
                f"{CORPUS}: skipped {relative_audio_path(wav, data_dir)}: name is not SSTTTEV.wav"
            )
            continue
        speaker, text, emotion, _ = match.groups()
        utterances.append(RawUtterance(
            utt_id=wav.stem,
            audio_path=relative_audio_path(wav, data_dir),
            speaker=speaker,
            gender=SPEAKER_GENDERS.get(speaker, "unknown"),
            votes=[("intended", emotion)],
            transcript=TEXTS.get(text),
            consensus_code=emotion,
        ))
    return finish(CORPUS, utterances, problems)
