"""IEMOCAP: per-evaluator categories from `Session*/dialog/EmoEvaluation/<dialog>.txt`.

Each utterance starts with a header `[start - end]<TAB>utt_id<TAB>code<TAB>[V, A, D]` (the code
is the corpus's consensus; `xxx` means no agreement), followed by lines such as
`C-E1:<TAB>Frustration; Anger;<TAB>()`: evaluator E1 chose these categories. An evaluator may
name several; the first is taken as that evaluator's vote (free-text `Other...` answers fold
into `Other`). `C-F1`/`C-M1` lines are the actors' ratings of their own speech, not listeners'
judgements, and `A-...` lines are dimensional ratings: both are skipped. The per-evaluator
files in the `Categorical/`, `Attribute/` and `Self-evaluation/` subfolders repeat the same
ratings and are not read. Audio is `Session*/sentences/wav/<dialog>/<utt_id>.wav`; the
transcript comes from `Session*/dialog/transcriptions/<dialog>.txt`.
"""
import re
from pathlib import Path

from components.paths import relative_audio_path
from components.prepare.loaders.common import finish, is_other_with_text, require_dir
from components.prepare.records import CorpusLayoutError, LoadedCorpus, RawUtterance

CORPUS = "iemocap"
_HEADER = re.compile(r"^\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\s+(\S+)\s+(\S+)\s+\[")
_EVALUATOR = re.compile(r"^C-(E\d+):\s*(.*)$")
_COMMENT = re.compile(r"\([^)]*\)\s*$")
"""The evaluator's free comment that ends a rating line: `(curious)`, often `()`."""
_RATING_LINE = re.compile(r"^[CA]-[A-Z]+\d*:")
_UTT_ID = re.compile(r"^Ses(\d\d)[FM]_.+_([FM])[^_]*$")
_TRANSCRIPT = re.compile(r"^(\S+)\s+\[[^\]]*\]:\s*(.*)$")


def load_iemocap(data_dir: Path) -> LoadedCorpus:
    """One utterance per evaluation header in every `Session*` folder of `data_dir`."""
    data_dir = require_dir(data_dir, CORPUS)
    sessions = sorted(
        p for p in data_dir.glob("Session*") if (p / "dialog" / "EmoEvaluation").is_dir()
    )
    if not sessions:
        raise CorpusLayoutError(
            f"{CORPUS}: no Session*/dialog/EmoEvaluation/ folder in {data_dir} "
            "(expected the IEMOCAP release layout: Session1 ... Session5)"
        )
    utterances, problems, folded = [], [], 0
    for session in sessions:
        if not (session / "sentences" / "wav").is_dir():
            raise CorpusLayoutError(
                f"{CORPUS}: {session.name} has evaluations but no audio folder "
                f"{session.name}/sentences/wav/"
            )
        for evaluation in sorted((session / "dialog" / "EmoEvaluation").glob("*.txt")):
            if evaluation.name.startswith("."):
                continue  # macOS resource-fork copies ("._Ses01F_impro01.txt") carry no labels
            where = relative_audio_path(evaluation, data_dir)
            transcripts = _transcripts(session / "dialog" / "transcriptions" / evaluation.name)
            for utt_id, code, votes in _evaluations(evaluation, where, problems):
                match = _UTT_ID.match(utt_id)
                if match is None:
                    problems.append(
                        f"{CORPUS}: {where}: skipped {utt_id}: "
                        "id is not SesNN<F|M>_<dialog>_<F|M>NNN"
                    )
                    continue
                folded += sum(is_other_with_text(code) for _, code in votes)
                votes = [(e, "Other" if is_other_with_text(c) else c) for e, c in votes]
                dialog = utt_id.rsplit("_", 1)[0]
                wav = session / "sentences" / "wav" / dialog / f"{utt_id}.wav"
                utterances.append(RawUtterance(
                    utt_id=utt_id,
                    audio_path=relative_audio_path(wav, data_dir),
                    speaker=f"Ses{match.group(1)}_{match.group(2)}",
                    gender="female" if match.group(2) == "F" else "male",
                    votes=votes,
                    transcript=transcripts.get(utt_id),
                    consensus_code=code,
                ))
    if folded:
        problems.append(f"{CORPUS}: folded {folded} free-text 'Other' vote(s) into 'Other'")
    return finish(CORPUS, utterances, problems)


def _evaluations(path: Path, where: str, problems: list[str]):
    """(utt_id, header code, [(evaluator, first category)]) per utterance block of one file;
    `where` names the file in problem notes."""
    block: tuple[str, str, dict[str, str]] | None = None
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("%"):
            continue
        header = _HEADER.match(line)
        if header:
            if block:
                yield block[0], block[1], list(block[2].items())
            block = (header.group(1), header.group(2), {})
            continue
        evaluator = _EVALUATOR.match(line)
        if evaluator and block:
            _add_vote(block, evaluator.group(1), evaluator.group(2), where, problems)
        elif not _RATING_LINE.match(line) or not block:
            problems.append(f"{CORPUS}: {where} line {number}: not understood, skipped: {line!r}")
    if block:
        yield block[0], block[1], list(block[2].items())


def _add_vote(block, evaluator: str, rest: str, where: str, problems: list[str]) -> None:
    utt_id, _, votes = block
    categories = [c.strip() for c in _COMMENT.sub("", rest).split(";") if c.strip()]
    if not categories:
        problems.append(f"{CORPUS}: {where}: {utt_id}: evaluator {evaluator} gave no category")
        return
    if evaluator in votes:
        problems.append(
            f"{CORPUS}: {where}: {utt_id}: evaluator {evaluator} rated twice; kept the last"
        )
        del votes[evaluator]
    votes[evaluator] = categories[0]


def _transcripts(path: Path) -> dict[str, str]:
    """utt_id -> text from a transcription file (`utt_id [start-end]: text`); {} when absent."""
    if not path.is_file():
        return {}
    texts = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _TRANSCRIPT.match(line.strip())
        if match:
            texts[match.group(1)] = match.group(2).strip()
    return texts
