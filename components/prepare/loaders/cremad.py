"""CREMA-D: crowd votes from the voice-only rows of `processedResults/tabulatedVotes.csv`.

The table's unnamed first column is 100000 x condition + clip number; condition 1 is voice
only (2 face only, 3 audio-visual), the condition whose raters heard what an SER model hears.
Columns A D F H N S count the votes per emotion. The tabulated table does not say who voted,
so each vote gets an anonymous id `voice_vote_01`, `voice_vote_02`, ... numbered per clip in
column order: ids are not the same rater across clips. `emoVote` is the plurality vote; a tie
(`N:S`) means the raters did not agree, which is passed on as consensus_code "" (NO_AGREEMENT).
Speaker sex comes from `VideoDemographics.csv`. Audio is optional here: rows are returned
whether or not `<fileName>.wav` exists (the manifest gate deals with missing audio).
"""
import re
from pathlib import Path

from components.labels import NO_AGREEMENT
from components.paths import UnsafePathError, relative_audio_path
from components.prepare.loaders.common import (
    finish, gender_from_word, read_table, require_dir, require_file,
)
from components.prepare.records import CorpusLayoutError, LoadedCorpus, RawUtterance

CORPUS = "cremad"
VOTES_TABLE = "processedResults/tabulatedVotes.csv"
DEMOGRAPHICS_TABLE = "VideoDemographics.csv"
VOTE_CODES = ("A", "D", "F", "H", "N", "S")
VOICE_ONLY = 1
SENTENCES = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
_CLIP = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")


def load_cremad(data_dir: Path, audio_dir: Path | str | None = None) -> LoadedCorpus:
    """One utterance per voice-only row, with one vote per counted response.

    `audio_dir` (default `data_dir/AudioWAV`) holds `<fileName>.wav`; it must lie inside
    `data_dir` because manifest audio paths are relative to the data root.
    """
    data_dir = require_dir(data_dir, CORPUS)
    audio_dir = Path(audio_dir) if audio_dir is not None else data_dir / "AudioWAV"
    try:
        relative_audio_path(audio_dir, data_dir)
    except UnsafePathError:
        raise CorpusLayoutError(
            f"{CORPUS}: audio folder {audio_dir} is outside the data folder {data_dir}; "
            "audio paths are stored relative to the data folder"
        ) from None
    votes_table = read_table(
        require_file(data_dir / VOTES_TABLE, CORPUS, "the CREMA-D label tables"),
        CORPUS, VOTE_CODES + ("fileName", "numResponses", "emoVote"),
    )
    demographics = read_table(
        require_file(data_dir / DEMOGRAPHICS_TABLE, CORPUS, "the CREMA-D label tables"),
        CORPUS, ("ActorID", "Sex"),
    )
    sex = {row.ActorID: gender_from_word(row.Sex) for row in demographics.itertuples()}
    row_ids = votes_table.columns[0]
    utterances, problems, no_demographics = [], [], set()
    for row in votes_table.to_dict("records"):
        row_id = row[row_ids]
        if not row_id.isdigit():
            problems.append(
                f"{CORPUS}: skipped a row with id {row_id!r} (not 100000 x condition + clip)"
            )
            continue
        if int(row_id) // 100000 != VOICE_ONLY:
            continue
        name = row["fileName"]
        match = _CLIP.match(name)
        if match is None:
            problems.append(f"{CORPUS}: skipped {name!r}: not ActorID_Sentence_Emotion_Level")
            continue
        counts = {code: row[code] for code in VOTE_CODES}
        if not all(c.isdigit() for c in counts.values()):
            problems.append(f"{CORPUS}: skipped {name}: vote counts {counts} are not whole numbers")
            continue
        votes = _anonymous_votes({code: int(n) for code, n in counts.items()})
        if row["numResponses"] != str(len(votes)):
            problems.append(
                f"{CORPUS}: {name}: numResponses is {row['numResponses']} but the counts add "
                f"up to {len(votes)}; kept the counts"
            )
        actor, sentence = match.group(1), match.group(2)
        if actor not in sex:
            no_demographics.add(actor)
        utterances.append(RawUtterance(
            utt_id=name,
            audio_path=relative_audio_path(audio_dir / f"{name}.wav", data_dir),
            speaker=actor,
            gender=sex.get(actor, "unknown"),
            votes=votes,
            transcript=SENTENCES.get(sentence),
            consensus_code=_consensus(row["emoVote"]),
        ))
    if no_demographics:
        problems.append(
            f"{CORPUS}: actor(s) {', '.join(sorted(no_demographics))} not in "
            f"{DEMOGRAPHICS_TABLE}; gender unknown"
        )
    if not utterances:
        raise CorpusLayoutError(
            f"{CORPUS}: {data_dir / VOTES_TABLE} has no usable voice-only rows "
            "(first column 1000xx = condition 1)"
        )
    return finish(CORPUS, utterances, problems)


def _anonymous_votes(counts: dict[str, int]) -> list[tuple[str, str]]:
    codes = [code for code in VOTE_CODES for _ in range(counts[code])]
    return [(f"voice_vote_{i:02d}", code) for i, code in enumerate(codes, start=1)]


def _consensus(emo_vote: str) -> str | None:
    """The plurality code; NO_AGREEMENT for a tie ('N:S'); None (derive) when the cell is empty."""
    emo_vote = emo_vote.strip()
    if not emo_vote:
        return None
    return NO_AGREEMENT if ":" in emo_vote else emo_vote
