"""MSP-Podcast: consensus, speaker and official split from `Labels/labels_consensus.csv`,
one vote per rater from `Labels/labels_detailed.csv` or `Labels/labels_detailed.json`.

Accepted per-rater formats (the releases differ):
- CSV with `FileName, EmoDetail`, one row per rating, EmoDetail
  `"WORKER00012; Angry; Angry,Frustrated; A:5.0; V:2.0; D:5.0;"` (rater; primary; secondary; ...);
- CSV with one column per field: rater in `Worker`/`WorkerID`/`Workers`/`Name`/`Annotator`,
  primary label in `EmoClass_Major`/`EmoClass`;
- JSON mapping FileName to either {rater: {"EmoClass_Major"|"EmoClass": ...}} or a list of
  ratings (bare, or under "Annotations"/"Workers") with the rater under
  "Name"/"Annotator"/"Worker"/"WorkerID".
A rater rating one file twice keeps the last rating (noted); `Other-<text>` answers fold into
`Other`. EmoClass `X` (no agreement) is passed on for the code map. Split_Set Train,
Development and Test1/Test2/... become train, dev and test.
"""
import json
from pathlib import Path

from components.paths import relative_audio_path
from components.prepare.loaders.common import (
    finish, gender_from_word, is_other_with_text, read_table, require_dir, require_file,
)
from components.prepare.records import CorpusLayoutError, LoadedCorpus, RawUtterance

CORPUS = "msp_podcast"
CONSENSUS_NAMES = ("labels_consensus.csv", "labels_concensus.csv")
"""Older releases spell the file `labels_concensus.csv`."""
CONSENSUS_COLUMNS = ("FileName", "EmoClass", "SpkrID", "Gender", "Split_Set")
AUDIO_FOLDERS = ("Audios", "Audio")
RATER_KEYS = ("Name", "Annotator", "Worker", "WorkerID", "Workers")
LABEL_KEYS = ("EmoClass_Major", "EmoClass")

Ratings = dict[str, dict[str, str]]
"""utt_id -> rater -> primary label code, in file order."""


def load_msp_podcast(data_dir: Path) -> LoadedCorpus:
    """One utterance per row of the consensus table, votes from the detailed labels."""
    data_dir = require_dir(data_dir, CORPUS)
    labels = data_dir / "Labels"
    consensus_path = next(
        (labels / n for n in CONSENSUS_NAMES if (labels / n).is_file()),
        labels / CONSENSUS_NAMES[0],
    )
    require_file(consensus_path, CORPUS, "Labels/labels_consensus.csv")
    consensus = read_table(consensus_path, CORPUS, CONSENSUS_COLUMNS)
    audio_folder = next((data_dir / n for n in AUDIO_FOLDERS if (data_dir / n).is_dir()), None)
    if audio_folder is None:
        raise CorpusLayoutError(
            f"{CORPUS}: no audio folder in {data_dir} "
            "(expected Audios/ or Audio/ with the .wav files)"
        )
    problems: list[str] = []
    ratings, folded = _read_ratings(labels, problems)
    utterances = []
    for row in consensus.to_dict("records"):
        name = row["FileName"].strip()
        utt_id = _stem(name)
        if not utt_id:
            problems.append(f"{CORPUS}: skipped a consensus row without FileName")
            continue
        split = _split(row["Split_Set"])
        if split is None:
            problems.append(f"{CORPUS}: {utt_id}: unknown Split_Set {row['Split_Set']!r}; no split")
        transcript_path = data_dir / "Transcripts" / f"{utt_id}.txt"
        utterances.append(RawUtterance(
            utt_id=utt_id,
            audio_path=relative_audio_path(audio_folder / name, data_dir),
            speaker=row["SpkrID"].strip() or "Unknown",
            gender=gender_from_word(row["Gender"]),
            votes=list(ratings.pop(utt_id, {}).items()),
            transcript=(
                transcript_path.read_text(encoding="utf-8", errors="replace").strip()
                if transcript_path.is_file() else None
            ),
            consensus_code=row["EmoClass"].strip() or None,
            split=split,
        ))
    if ratings:
        problems.append(
            f"{CORPUS}: ratings for {len(ratings)} file(s) not in the consensus table were left "
            f"out (e.g. {sorted(ratings)[0]})"
        )
    if folded:
        problems.append(f"{CORPUS}: folded {folded} 'Other-<text>' rating(s) into 'Other'")
    return finish(CORPUS, utterances, problems)


def _stem(file_name: str) -> str:
    return file_name[:-4] if file_name.lower().endswith(".wav") else file_name


def _split(split_set: str) -> str | None:
    value = split_set.strip()
    if value == "Train":
        return "train"
    if value in ("Development", "Validation"):
        return "dev"
    if value.startswith("Test"):
        return "test"
    return None


def _read_ratings(labels: Path, problems: list[str]) -> tuple[Ratings, int]:
    """Per-rater primary labels (CSV preferred over JSON) and how many 'Other-' answers folded."""
    csv_path, json_path = labels / "labels_detailed.csv", labels / "labels_detailed.json"
    if csv_path.is_file():
        raw = _ratings_from_csv(csv_path, problems)
    elif json_path.is_file():
        raw = _ratings_from_json(json_path, problems)
    else:
        problems.append(
            f"{CORPUS}: no Labels/labels_detailed.csv or .json; utterances have no per-rater votes"
        )
        return {}, 0
    ratings: Ratings = {}
    folded = 0
    for file_name, rater, label in raw:
        if is_other_with_text(label):
            label, folded = "Other", folded + 1
        utt_id = _stem(file_name)
        per_file = ratings.setdefault(utt_id, {})
        if rater in per_file:
            problems.append(
                f"{CORPUS}: {utt_id}: rater {rater} rated twice ({per_file[rater]}, {label}); "
                "kept the last"
            )
            del per_file[rater]
        per_file[rater] = label
    return ratings, folded


def _ratings_from_csv(path: Path, problems: list[str]) -> list[tuple[str, str, str]]:
    table = read_table(path, CORPUS, ("FileName",))
    rater_col = next((c for c in RATER_KEYS if c in table.columns), None)
    label_col = next((c for c in LABEL_KEYS if c in table.columns), None)
    if "EmoDetail" not in table.columns and (rater_col is None or label_col is None):
        raise CorpusLayoutError(
            f"{CORPUS}: {path} has neither an EmoDetail column nor rater and label columns "
            f"(expected FileName,EmoDetail or FileName,{'/'.join(RATER_KEYS)},"
            f"{'/'.join(LABEL_KEYS)})"
        )
    out = []
    for row in table.to_dict("records"):
        if "EmoDetail" in table.columns:
            fields = [f.strip() for f in row["EmoDetail"].split(";")]
            rater, label = (fields + ["", ""])[:2]
        else:
            rater, label = row[rater_col].strip(), row[label_col].strip()
        if not rater or not label:
            problems.append(f"{CORPUS}: skipped an unreadable rating of {row['FileName']}: {row}")
            continue
        out.append((row["FileName"].strip(), rater, label))
    return out


class _JsonObject(list):
    """A JSON object kept as its (key, value) pairs, so a rater key repeated in one file is seen."""


def _ratings_from_json(path: Path, problems: list[str]) -> list[tuple[str, str, str]]:
    data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_JsonObject)
    if not isinstance(data, _JsonObject):
        raise CorpusLayoutError(f"{CORPUS}: {path} is not a mapping of FileName to ratings")
    out = []
    for file_name, entry in data:
        for rater, label, raw in _json_ratings(entry):
            if not rater or not label:
                problems.append(f"{CORPUS}: skipped an unreadable rating of {file_name}: {raw}")
                continue
            out.append((file_name, rater, label))
    return out


def _json_ratings(entry: object) -> list[tuple[str, str, object]]:
    """(rater, label, raw rating) of one file, whichever accepted shape it has; rater or label
    is '' where the rating cannot be read."""
    if isinstance(entry, _JsonObject):
        fields = dict(entry)
        listed = next((fields[k] for k in ("Annotations", "Workers") if k in fields), None)
        if isinstance(listed, list) and not isinstance(listed, _JsonObject):
            return _json_ratings(listed)
        return [(str(rater).strip(), _label(rating), rating) for rater, rating in entry]
    if isinstance(entry, list):
        return [(_field(rating, RATER_KEYS), _label(rating), rating) for rating in entry]
    return [("", "", entry)]


def _field(rating: object, keys: tuple[str, ...]) -> str:
    """The first of `keys` a JSON rating object has, as stripped text ('' when none)."""
    fields = dict(rating) if isinstance(rating, _JsonObject) else {}
    return next((str(fields[k]).strip() for k in keys if fields.get(k) is not None), "")


def _label(rating: object) -> str:
    return _field(rating, LABEL_KEYS)
