"""Tiny corpora in each real corpus's on-disk format, with short real WAV audio.

Every `write_<corpus>_fixture(root, ...)` writes under `root` and returns the corpus folder (the
data root a loader is given). The default contents are the module constants below, so tests can
assert exact values. The audio is a few harmonics of a gliding pitch (a voice-like tone), its
pitch derived from the file name, so files differ and decode like real speech files.
"""
import csv
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf


def write_tone(
    path: Path, seconds: float = 0.4, sample_rate: int = 16000, channels: int = 1,
    f0: float | None = None,
) -> Path:
    """A 16-bit WAV of five harmonics on a gliding pitch with fades; f0 from the name if None."""
    if f0 is None:
        f0 = 110.0 + zlib.crc32(path.name.encode()) % 160
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    pitch = f0 * (1.0 + 0.08 * np.sin(2 * np.pi * 1.5 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    wave = sum(np.sin(k * phase) / k for k in range(1, 6))
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02)
    audio = (0.3 * wave * fade / np.max(np.abs(wave))).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.repeat(audio[:, None], channels, axis=1), sample_rate, subtype="PCM_16")
    return path


# ---------------------------------------------------------------------------------- RAVDESS

RAVDESS_EMOTIONS = ("01", "02", "03", "04", "05", "06", "07", "08")


def ravdess_name(
    emotion: str, actor: int, statement: int = 1, intensity: int = 1, repetition: int = 1,
    modality: int = 3, channel: int = 1,
) -> str:
    """`MM-VV-EE-II-SS-RR-AA.wav`."""
    fields = (modality, channel, int(emotion), intensity, statement, repetition, actor)
    return "-".join(f"{f:02d}" for f in fields) + ".wav"


def write_ravdess_fixture(
    root: Path, actors: tuple[int, ...] = (1, 2, 3, 4),
    emotions: tuple[str, ...] = RAVDESS_EMOTIONS, sample_rate: int = 16000,
    seconds: float = 0.4,
) -> Path:
    """`Actor_XX/03-01-EE-01-SS-01-XX.wav` per actor and emotion; statement 01 for odd
    emotion codes, 02 for even ones."""
    for actor in actors:
        for emotion in emotions:
            name = ravdess_name(emotion, actor, statement=2 - int(emotion) % 2)
            write_tone(root / f"Actor_{actor:02d}" / name, seconds, sample_rate)
    return root


# ---------------------------------------------------------------------------------- CREMA-D

CREMAD_CODES = ("A", "D", "F", "H", "N", "S")


@dataclass(frozen=True)
class CremadClip:
    name: str
    """ActorID_Sentence_Emotion_Level."""
    voice_votes: dict[str, int]
    """Voice-only vote counts per code (A D F H N S); other codes count 0."""


CREMAD_CLIPS = (
    CremadClip("1001_DFA_ANG_XX", {"A": 6, "D": 2, "N": 1}),
    CremadClip("1001_IEO_NEU_XX", {"H": 1, "N": 10}),
    CremadClip("1002_IEO_HAP_LO", {"H": 3, "N": 3}),  # a tie: emoVote "H:N"
    CremadClip("1002_TIE_SAD_XX", {"N": 1, "S": 7}),
    CremadClip("1003_WSI_FEA_HI", {"F": 5, "S": 2}),
    CremadClip("1004_ITH_DIS_MD", {"A": 1, "D": 4, "N": 1}),
)
CREMAD_ACTORS = {"1001": "Male", "1002": "Female", "1003": "Female", "1004": "Male"}
_CREMAD_EMOTION_CODE = {"ANG": "A", "DIS": "D", "FEA": "F", "HAP": "H", "NEU": "N", "SAD": "S"}
_CREMAD_VOTE_COLUMNS = [
    "", *CREMAD_CODES, "fileName", "numResponses", "agreement", "emoVote", "meanEmoResp",
    "meanAngerResp", "meanDisgustResp", "meanFearResp", "meanHappyResp", "meanNeutralResp",
    "meanSadResp", "medianEmoResp", "meanEmoRespNorm", "meanAngerRespNorm",
    "meanDisgustRespNorm", "meanFearRespNorm", "meanHappyRespNorm", "meanNeutralRespNorm",
    "meanSadRespNorm", "medianEmoRespNorm",
]


def cremad_emo_vote(counts: dict[str, int]) -> str:
    """The table's plurality vote: every code with the top count, joined by ':' ('H:N')."""
    top = max(counts.values())
    return ":".join(code for code in CREMAD_CODES if counts.get(code, 0) == top)


def write_cremad_fixture(
    root: Path, clips: tuple[CremadClip, ...] = CREMAD_CLIPS,
    actors: dict[str, str] = CREMAD_ACTORS, with_audio: bool = True, seconds: float = 0.4,
) -> Path:
    """The four CREMA-D tables (voice, face and audio-visual rows; the face and audio-visual
    rows give every vote to the acted emotion) and, if `with_audio`, `AudioWAV/<name>.wav`."""
    rows = []
    for condition in (1, 2, 3):
        for number, clip in enumerate(clips, start=1):
            acted = _CREMAD_EMOTION_CODE[clip.name.split("_")[2]]
            counts = clip.voice_votes if condition == 1 else {acted: 8}
            rows.append(_cremad_vote_row(100000 * condition + number, clip.name, counts))
    _write_csv(root / "processedResults" / "tabulatedVotes.csv", _CREMAD_VOTE_COLUMNS, rows)
    _write_csv(
        root / "processedResults" / "summaryTable.csv",
        ["", "FileName", "VoiceVote", "VoiceLevel", "FaceVote", "FaceLevel", "MultiModalVote",
         "MultiModalLevel"],
        [
            [str(i), clip.name, cremad_emo_vote(clip.voice_votes), 60.0,
             _CREMAD_EMOTION_CODE[clip.name.split("_")[2]], 70.0,
             _CREMAD_EMOTION_CODE[clip.name.split("_")[2]], 65.0]
            for i, clip in enumerate(clips, start=1)
        ],
    )
    _write_csv(
        root / "SentenceFilenames.csv", ["Stimulus_Number", "Filename"],
        [[i, clip.name] for i, clip in enumerate(clips, start=1)],
    )
    _write_csv(
        root / "VideoDemographics.csv", ["ActorID", "Age", "Sex", "Race", "Ethnicity"],
        [[int(actor), 30 + i, sex, "Unknown", "Not Hispanic"]
         for i, (actor, sex) in enumerate(actors.items())],
    )
    if with_audio:
        for clip in clips:
            write_tone(root / "AudioWAV" / f"{clip.name}.wav", seconds)
    return root


def _cremad_vote_row(row_id: int, name: str, counts: dict[str, int]) -> list:
    full = {code: counts.get(code, 0) for code in CREMAD_CODES}
    total = sum(full.values())
    means = [60.0 if full[code] else -1 for code in CREMAD_CODES]
    return [
        str(row_id), *full.values(), name, total, max(full.values()) / total,
        cremad_emo_vote(full), 60.0, *means, 60, 55.0, *means, 58.0,
    ]


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    """Quoted like the real tables: text and the header in quotes, numbers bare."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_NONNUMERIC)
        writer.writerow(header)
        writer.writerows(rows)


# ------------------------------------------------------------------------------ MSP-Podcast

@dataclass(frozen=True)
class MspClip:
    file_name: str
    emo_class: str
    speaker: str
    gender: str
    split_set: str
    ratings: tuple[tuple[str, str], ...]
    """(worker, primary label) in file order; a worker may repeat."""
    transcript: str | None = None


MSP_CLIPS = (
    MspClip("MSP-PODCAST_0001_0008.wav", "A", "127", "Male", "Train",
            (("WORKER00012", "Angry"), ("WORKER00031", "Angry"),
             ("WORKER00044", "Other-Frustrated")),
            "I told you not to touch that."),
    MspClip("MSP-PODCAST_0001_0011.wav", "N", "127", "Male", "Train",
            (("WORKER00012", "Neutral"), ("WORKER00050", "Neutral"), ("WORKER00031", "Sad"),
             ("WORKER00050", "Happy"))),  # WORKER00050 rated twice: the last (Happy) counts
    MspClip("MSP-PODCAST_0002_0003.wav", "X", "Unknown", "Unknown", "Development",
            (("WORKER00012", "Happy"), ("WORKER00031", "Sad"), ("WORKER00061", "Neutral")),
            "well I guess that is one way to see it"),
    MspClip("MSP-PODCAST_0003_0020.wav", "S", "310", "Female", "Test1",
            (("WORKER00031", "Sad"), ("WORKER00061", "Sad"), ("WORKER00077", "Neutral"))),
    MspClip("MSP-PODCAST_0004_0001.wav", "H", "412", "Female", "Test2",
            (("WORKER00044", "Happy"), ("WORKER00077", "Happy"), ("WORKER00012", "Surprise"))),
)
MSP_DETAILED_FORMATS = ("csv", "json", "json_list", "csv_columns")


def write_msp_podcast_fixture(
    root: Path, clips: tuple[MspClip, ...] = MSP_CLIPS, detailed: str | None = "csv",
    audio_folder: str = "Audios", seconds: float = 0.4,
) -> Path:
    """`Labels/labels_consensus.csv`, per-rater labels, `<audio_folder>/<FileName>` and
    `Transcripts/<name>.txt` for clips with a transcript.

    `detailed`: "csv" (FileName, EmoDetail), "csv_columns" (one column per field, as in early
    releases), "json" (FileName -> {worker: rating}, a repeated worker written as a repeated
    key), "json_list" (FileName -> {"Annotations": [{"Name": ..., "EmoClass_Major": ...}]}), or
    None for no per-rater file.
    """
    labels = root / "Labels"
    _write_csv(
        labels / "labels_consensus.csv",
        ["FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set"],
        [[c.file_name, c.emo_class, 4.0, 3.5, 4.2, c.speaker, c.gender, c.split_set]
         for c in clips],
    )
    _write_msp_detailed(labels, clips, detailed)
    for clip in clips:
        write_tone(root / audio_folder / clip.file_name, seconds)
        if clip.transcript is not None:
            text_path = root / "Transcripts" / f"{clip.file_name[:-4]}.txt"
            text_path.parent.mkdir(parents=True, exist_ok=True)
            text_path.write_text(clip.transcript + "\n")
    return root


def _write_msp_detailed(labels: Path, clips: tuple[MspClip, ...], detailed: str | None) -> None:
    if detailed is None:
        return
    if detailed not in MSP_DETAILED_FORMATS:
        raise ValueError(f"detailed must be one of {MSP_DETAILED_FORMATS} or None")
    if detailed == "csv":
        _write_csv(labels / "labels_detailed.csv", ["FileName", "EmoDetail"], [
            [c.file_name, f"{worker}; {label}; {label}; A:4.0; V:3.0; D:4.0;"]
            for c in clips for worker, label in c.ratings
        ])
    elif detailed == "csv_columns":
        _write_csv(
            labels / "labels_detailed.csv",
            ["FileName", "Workers", "EmoClass_Major", "EmoClass_Second", "EmoAct", "EmoVal",
             "EmoDom"],
            [[c.file_name, worker, label, label, 4.0, 3.0, 4.0]
             for c in clips for worker, label in c.ratings],
        )
    elif detailed == "json_list":
        (labels / "labels_detailed.json").write_text(json.dumps({
            c.file_name: {"Annotations": [
                {"Name": worker, "EmoClass_Major": label, "EmoClass_Second": label,
                 "EmoAct": 4.0, "EmoVal": 3.0, "EmoDom": 4.0}
                for worker, label in c.ratings
            ]} for c in clips
        }, indent=1))
    else:  # written by hand so that a repeated worker stays a repeated key, as in the release
        files = []
        for c in clips:
            workers = ", ".join(
                f"{json.dumps(worker)}: "
                + json.dumps({"EmoClass_Major": label, "EmoAct": 4.0, "EmoVal": 3.0})
                for worker, label in c.ratings
            )
            files.append(f"{json.dumps(c.file_name)}: {{{workers}}}")
        (labels / "labels_detailed.json").write_text("{\n" + ",\n".join(files) + "\n}\n")


# ---------------------------------------------------------------------------------- IEMOCAP

@dataclass(frozen=True)
class IemocapTurn:
    utt_id: str
    code: str
    evaluators: tuple[tuple[str, str], ...]
    """(evaluator, categories as written, e.g. 'Frustration; Anger;') for C-E lines."""
    self_rating: str
    """The actor's own categories (a C-F1 or C-M1 line), which loaders must ignore."""
    transcript: str | None


IEMOCAP_DIALOGS: dict[str, tuple[IemocapTurn, ...]] = {
    "Ses01F_impro01": (
        IemocapTurn("Ses01F_impro01_F000", "neu",
                    (("E2", "Neutral;"), ("E3", "Neutral;"), ("E4", "Neutral;")),
                    "Neutral;", "Excuse me."),
        IemocapTurn("Ses01F_impro01_M000", "fru",
                    (("E1", "Frustration; Anger;"), ("E2", "Anger;"), ("E3", "Frustration;")),
                    "Anger;", "Do you have your forms?"),
        IemocapTurn("Ses01F_impro01_F001", "xxx",
                    (("E1", "Neutral;"), ("E2", "Sadness;"), ("E4", "Other:annoyed;")),
                    "Sadness;", None),
    ),
    "Ses02M_script01_1": (
        IemocapTurn("Ses02M_script01_1_M000", "hap",
                    (("E1", "Happiness;"), ("E2", "Excited; Happiness;"), ("E3", "Happiness;")),
                    "Happiness;", "What a great day."),
        IemocapTurn("Ses02M_script01_1_F000", "sad",
                    (("E1", "Sadness;"), ("E3", "Sadness; Frustration;")),
                    "Neutral;", "I don't think so."),
    ),
}


def write_iemocap_fixture(
    root: Path, dialogs: dict[str, tuple[IemocapTurn, ...]] = IEMOCAP_DIALOGS,
    seconds: float = 0.4,
) -> Path:
    """`Session<n>/dialog/EmoEvaluation/<dialog>.txt` (with self and dimensional lines and a
    `Categorical/` subfolder that must not be read), `transcriptions/<dialog>.txt` and
    `sentences/wav/<dialog>/<utt_id>.wav`."""
    for dialog, turns in dialogs.items():
        session = root / f"Session{int(dialog[3:5])}"
        evaluation = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        transcripts = []
        start = 2.5
        for turn in turns:
            end = start + seconds
            evaluation.append(
                f"[{start:.4f} - {end:.4f}]\t{turn.utt_id}\t{turn.code}\t[2.5000, 3.0000, 2.5000]"
            )
            evaluation += [f"C-{who}:\t{cats}\t()" for who, cats in turn.evaluators]
            actor = turn.utt_id.rsplit("_", 1)[1][0]
            evaluation.append(f"C-{actor}1:\t{turn.self_rating}\t(own reading)")
            evaluation.append("A-E3:\tval 3; act 2; dom  2;\t()")
            evaluation.append("")
            if turn.transcript is not None:
                transcripts.append(f"{turn.utt_id} [{start:08.4f}-{end:08.4f}]: {turn.transcript}")
            write_tone(session / "sentences" / "wav" / dialog / f"{turn.utt_id}.wav", seconds)
            start = end + 1.0
        folder = session / "dialog" / "EmoEvaluation"
        (folder / "Categorical").mkdir(parents=True, exist_ok=True)
        (folder / f"{dialog}.txt").write_text("\n".join(evaluation) + "\n")
        (folder / "Categorical" / f"{dialog}_e2_cat.txt").write_text(
            "".join(f"{turn.utt_id} :Surprise;\n" for turn in turns)
        )
        transcript_path = session / "dialog" / "transcriptions" / f"{dialog}.txt"
        transcript_path.parent.mkdir(parents=True, exist_ok=True)
        transcript_path.write_text("\n".join(transcripts) + "\n")
    return root


# ----------------------------------------------------------------------------------- EmoDB

EMODB_FILES = ("03a01Fa", "03b10Nc", "08a02Wa", "09b03Ta", "10a04Lb", "13a05Ea", "16a07Aa")


def write_emodb_fixture(
    root: Path, names: tuple[str, ...] = EMODB_FILES, in_wav_folder: bool = True,
    seconds: float = 0.4,
) -> Path:
    """`wav/SSTTTEV.wav` per name (the release layout), or the files directly in `root`."""
    folder = root / "wav" if in_wav_folder else root
    for name in names:
        write_tone(folder / f"{name}.wav", seconds)
    return root
