"""Small pieces every corpus loader needs: layout checks, gender words, the final sort."""
import re
from pathlib import Path

import pandas as pd

from components.prepare.records import CorpusLayoutError, LoadedCorpus, RawUtterance

_GENDER_WORDS = {"male": "male", "m": "male", "female": "female", "f": "female"}
_OTHER_WITH_TEXT = re.compile(r"^Other\b.")


def require_dir(data_dir: Path, corpus: str) -> Path:
    """The corpus folder as a Path; a layout error when it is not a folder."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise CorpusLayoutError(f"{corpus}: data folder {data_dir} does not exist")
    return data_dir


def require_file(path: Path, corpus: str, expected: str) -> Path:
    """`path` when it is a file; else a layout error naming it and the expected layout."""
    if not path.is_file():
        raise CorpusLayoutError(f"{corpus}: missing {path} (expected {expected})")
    return path


def read_table(path: Path, corpus: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """A CSV table read as text (no type guessing, empty cells stay ''), with required columns."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise CorpusLayoutError(
            f"{corpus}: {path} lacks column(s) {', '.join(missing)} "
            f"(expected {', '.join(columns)}; found {', '.join(map(str, table.columns))})"
        )
    return table


def gender_from_word(word: str) -> str:
    """'male'/'female' from the words corpora use (Male, F, ...); anything else is 'unknown'."""
    return _GENDER_WORDS.get(str(word).strip().lower(), "unknown")


def is_other_with_text(label: str) -> bool:
    """True for free-text 'Other' answers ('Other-Concerned', 'Other: amused'), which fold into
    the category 'Other'; False for plain 'Other' and for other words."""
    return bool(_OTHER_WITH_TEXT.match(label))


def finish(corpus: str, utterances: list[RawUtterance], problems: list[str]) -> LoadedCorpus:
    """Sort by utt_id and keep the first of any repeated id, noting each repeat."""
    kept: dict[str, RawUtterance] = {}
    for utt in utterances:
        if utt.utt_id in kept:
            problems.append(
                f"{corpus}: {utt.utt_id} appears twice ({kept[utt.utt_id].audio_path} and "
                f"{utt.audio_path}); kept the first"
            )
            continue
        kept[utt.utt_id] = utt
    return LoadedCorpus(utterances=[kept[k] for k in sorted(kept)], problems=problems)
