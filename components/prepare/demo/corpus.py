"""The synthetic demo corpus: emotional speech made offline with eSpeak NG.

Emotion lives in the prosody (pitch level and range, rate, loudness, pauses), each speaker has
its own voice and baseline, some clips say words that argue for another emotion than the voice,
and simulated annotators disagree the way people do (neighbours in arousal and valence, some
following the words). So the pipeline meets the same problems as on real corpora, on a laptop
with no download. A clip's design and audio depend only on (config, seed, clip index).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from components.audio_io import resample
from components.config import DemoConfig
from components.paths import resolve_audio_path
from components.prepare.demo.espeak import Prosody, backend, synthesize
from components.prepare.records import LoadedCorpus, RawUtterance

GENERATOR_VERSION = 1
"""Bump when the design or the rendering changes, so cached audio is regenerated."""

SPEC_FILE = "demo_spec.json"


@dataclass(frozen=True)
class EmotionStyle:
    """How an emotion shifts a speaker's baseline (scaled by the speaker's expressiveness)."""

    pitch: float
    """Added to eSpeak's pitch parameter (0-99 scale)."""
    pitch_range: float
    """Added to eSpeak's range parameter (0-99 scale)."""
    rate: float
    """Speaking-rate factor."""
    volume: float
    """Added to eSpeak's amplitude (0-200 scale)."""
    word_gap: float
    """Pause between words, in 10 ms units."""


EMOTION_STYLES: dict[str, EmotionStyle] = {
    "neutral": EmotionStyle(pitch=0, pitch_range=0, rate=1.0, volume=0, word_gap=0),
    "calm": EmotionStyle(pitch=-4, pitch_range=-14, rate=0.9, volume=-18, word_gap=1),
    "happy": EmotionStyle(pitch=12, pitch_range=25, rate=1.1, volume=15, word_gap=0),
    "sad": EmotionStyle(pitch=-14, pitch_range=-30, rate=0.78, volume=-30, word_gap=4),
    "angry": EmotionStyle(pitch=10, pitch_range=22, rate=1.22, volume=50, word_gap=0),
    "fear": EmotionStyle(pitch=18, pitch_range=-8, rate=1.25, volume=5, word_gap=2),
    "surprise": EmotionStyle(pitch=22, pitch_range=40, rate=1.05, volume=20, word_gap=0),
    "disgust": EmotionStyle(pitch=-8, pitch_range=5, rate=0.85, volume=10, word_gap=2),
    "boredom": EmotionStyle(pitch=-10, pitch_range=-38, rate=0.8, volume=-25, word_gap=2),
}
SUPPORTED_EMOTIONS = tuple(EMOTION_STYLES)

# (valence, arousal) in [-1, 1]: annotators confuse emotions that lie close together here.
AROUSAL_VALENCE: dict[str, tuple[float, float]] = {
    "neutral": (0.0, 0.0), "calm": (0.3, -0.5), "happy": (0.8, 0.5), "sad": (-0.7, -0.5),
    "angry": (-0.6, 0.8), "fear": (-0.7, 0.6), "surprise": (0.3, 0.8),
    "disgust": (-0.6, 0.3), "boredom": (-0.3, -0.7),
}

SENTENCES: dict[str, tuple[str, ...]] = {
    "neutral": (
        "The meeting has been moved to Thursday afternoon.",
        "Please put the folders on the second shelf.",
        "The train leaves from platform four at ten past nine.",
        "I will send you the report by the end of the day.",
        "The kitchen is on the left at the end of the hall.",
        "We need two more chairs for the back row.",
        "The library closes at six on weekdays.",
        "Turn right after the bridge and follow the road.",
        "The package should arrive sometime next week.",
        "She wrote the numbers down on a small card.",
        "The printer on the third floor is working again.",
        "Our flight lands a little after noon.",
        "He parked the car behind the old building.",
        "The form asks for your address and phone number.",
        "There are seven apples left in the basket.",
        "The bus stops here every twenty minutes.",
    ),
    "calm": (
        "Everything is fine, we have plenty of time.",
        "Take a deep breath and let the day slow down.",
        "The lake is quiet and the evening is warm.",
        "There is no rush, just take it one step at a time.",
        "I feel relaxed now that the work is done.",
        "Let us sit here and listen to the rain for a while.",
    ),
    "happy": (
        "I got the job, I can hardly believe how lucky I am!",
        "This is the best birthday present I have ever had.",
        "We won the game and everyone is celebrating.",
        "I am so glad you could come to the party.",
        "What a wonderful day, the sun is shining at last.",
        "My sister just had a beautiful baby girl.",
    ),
    "sad": (
        "I miss her so much since she passed away.",
        "Nobody came to see me, and I spent the day alone.",
        "We had to say goodbye to our old dog this morning.",
        "I tried so hard, and I still lost everything.",
        "The house feels empty and cold without them.",
        "I do not think things will ever get better.",
    ),
    "angry": (
        "How dare you lie to me again after everything!",
        "I am sick and tired of cleaning up your mess.",
        "Get out of my office right now!",
        "You broke your promise, and I am furious about it.",
        "Stop interrupting me, this is completely unacceptable!",
        "They cheated us, and I will not stand for it.",
    ),
    "fear": (
        "Did you hear that noise, someone is in the house.",
        "Please do not leave me alone here in the dark.",
        "I think the brakes are failing, we are going to crash.",
        "Something is following us, walk faster.",
        "I am terrified of what the doctor will say.",
        "The water is rising and I cannot find the way out.",
    ),
    "surprise": (
        "Wait, you are moving to Japan next week?",
        "I never expected to see you here of all places!",
        "No way, the whole team came all this way for me?",
        "You painted all of this yourself, really?",
        "The results came back and they are not what anyone thought!",
        "What, the concert is today and not tomorrow?",
    ),
    "disgust": (
        "That smell is revolting, something has rotted in there.",
        "There is a hair in my soup, I feel sick.",
        "The way he treats his staff is disgusting.",
        "Ugh, the sink is full of mouldy dishes again.",
        "I cannot eat this, it tastes like old grease.",
        "Those photos were vile, I wish I had not looked.",
    ),
    "boredom": (
        "Another meeting about the same old schedule.",
        "There is nothing to do here, and the day will not end.",
        "He talked about his stamp collection for three hours.",
        "I have read this page four times already.",
        "We are waiting in line again, as usual.",
        "The film was long and nothing ever happened.",
    ),
}

RATERS = tuple(f"rater{i:02d}" for i in range(1, 13))
"""The annotator pool; each clip is rated by a subset, so rater ids recur across clips."""

_VOICE_VARIANTS = {
    "female": ("f1", "f2", "f3", "f4", "f5"),
    "male": ("m1", "m2", "m3", "m4", "m5", "m6", "m7"),
}
_LANGUAGES = ("en-us", "en")
_BASE_RATE = 165.0  # words per minute


@dataclass(frozen=True)
class Speaker:
    id: str
    gender: str
    voice: str
    """eSpeak voice name with its variant, e.g. 'en-us+f2'."""
    pitch: float
    pitch_range: float
    rate: float
    volume: float
    expressiveness: float
    """How strongly this speaker shows emotion (scales the emotion styles)."""


@dataclass(frozen=True)
class Rater:
    id: str
    reliability: float
    """Chance of hearing the rendered emotion on a perfectly clear clip."""
    word_following: float
    """Chance of labelling what the words say when words and voice disagree."""


@dataclass(frozen=True)
class ClipPlan:
    """Everything about one clip, decided before any audio is made."""

    utt_id: str
    speaker: Speaker
    emotion: str
    """The emotion the prosody renders (the clip's true emotion)."""
    text_emotion: str
    """The emotion the words argue for ('neutral' for neutral words)."""
    text: str
    prosody: Prosody
    synth_seed: int
    votes: tuple[tuple[str, str], ...]

    @property
    def audio_path(self) -> str:
        return f"{self.speaker.id}/{self.utt_id}.wav"

    @property
    def incongruent(self) -> bool:
        return self.text_emotion not in ("neutral", self.emotion)


def validate_config(cfg: DemoConfig) -> None:
    """Reject settings the generator cannot honour, naming the setting."""
    unknown = [e for e in cfg.emotions if e not in EMOTION_STYLES]
    if unknown:
        raise ValueError(
            f"demo.emotions: unknown emotion {unknown[0]!r}; supported: "
            f"{', '.join(SUPPORTED_EMOTIONS)}"
        )
    if not cfg.emotions or len(set(cfg.emotions)) != len(cfg.emotions):
        raise ValueError(f"demo.emotions must be non-empty without repeats, got {cfg.emotions}")
    if cfg.n_clips < 1 or cfg.n_speakers < 1:
        raise ValueError(
            f"demo.n_clips and demo.n_speakers must be at least 1 "
            f"(got {cfg.n_clips}, {cfg.n_speakers})"
        )
    if not 1 <= cfg.annotators_min <= cfg.annotators_max <= len(RATERS):
        raise ValueError(
            f"demo.annotators_min/max must satisfy 1 <= min <= max <= {len(RATERS)} "
            f"(got {cfg.annotators_min}, {cfg.annotators_max})"
        )
    shares = (cfg.incongruent_share, cfg.neutral_text_share)
    if min(shares) < 0 or sum(shares) > 1:
        raise ValueError(
            "demo.incongruent_share and demo.neutral_text_share must be >= 0 and sum to at "
            f"most 1 (got {shares[0]}, {shares[1]})"
        )
    if cfg.sample_rate < 8000:
        raise ValueError(f"demo.sample_rate must be at least 8000 Hz, got {cfg.sample_rate}")


def _design_speakers(n: int, rng: np.random.Generator) -> list[Speaker]:
    genders = rng.permutation(["female", "male"] * math.ceil(n / 2))[:n]
    variants = {g: list(rng.permutation(v)) for g, v in _VOICE_VARIANTS.items()}
    speakers = []
    for i, gender in enumerate(genders):
        pool = variants[str(gender)]
        variant = pool[sum(genders[:i] == gender) % len(pool)]
        speakers.append(Speaker(
            id=f"spk{i + 1:02d}",
            gender=str(gender),
            voice=f"{rng.choice(_LANGUAGES)}+{variant}",
            pitch=float(np.clip(rng.normal(50, 7), 30, 70)),
            pitch_range=float(np.clip(rng.normal(50, 8), 30, 70)),
            rate=float(_BASE_RATE * math.exp(rng.normal(0, 0.08))),
            volume=float(np.clip(rng.normal(100, 8), 80, 120)),
            expressiveness=float(rng.uniform(0.7, 1.3)),
        ))
    return speakers


def _design_raters(rng: np.random.Generator) -> list[Rater]:
    return [
        Rater(rid, float(rng.uniform(0.72, 0.97)), float(rng.uniform(0.1, 0.45)))
        for rid in RATERS
    ]


def _confusion_weights(emotion: str, labels: Sequence[str]) -> np.ndarray:
    """Which other label an unsure annotator picks: near in arousal/valence, or neutral."""
    v0, a0 = AROUSAL_VALENCE[emotion]
    weights = []
    for label in labels:
        if label == emotion:
            weights.append(0.0)
            continue
        v, a = AROUSAL_VALENCE[label]
        near = math.exp(-((v - v0) ** 2 + (a - a0) ** 2) / 0.5)
        weights.append(near + (0.3 if label == "neutral" else 0.02))
    w = np.asarray(weights)
    return w / w.sum() if w.sum() > 0 else w


def _vote(
    rater: Rater, emotion: str, text_emotion: str, clarity: float, labels: Sequence[str],
    rng: np.random.Generator,
) -> str:
    if text_emotion not in ("neutral", emotion) and rng.random() < rater.word_following:
        return text_emotion
    confusion = _confusion_weights(emotion, labels)
    if rng.random() < rater.reliability * clarity or confusion.sum() == 0:
        return emotion
    return str(rng.choice(labels, p=confusion))


def _text_kinds(cfg: DemoConfig, emotions: list[str], rng: np.random.Generator) -> list[str]:
    """Per clip 'incongruent', 'neutral' or 'own' words, in the configured shares.

    Incongruent clips need another non-neutral emotion in the set. Neutral-prosody clips fill
    the neutral-words quota first, as their own words are neutral anyway.
    """
    n = len(emotions)
    kinds = ["own"] * n
    can_contradict = [
        i for i in range(n) if any(e not in ("neutral", emotions[i]) for e in cfg.emotions)
    ]
    for i in rng.permutation(can_contradict)[: round(cfg.incongruent_share * n)]:
        kinds[i] = "incongruent"
    rest = [i for i in rng.permutation(n) if kinds[i] == "own"]
    rest.sort(key=lambda i: emotions[i] != "neutral")  # stable: neutral prosody first
    for i in rest[: round(cfg.neutral_text_share * n)]:
        kinds[i] = "neutral"
    return kinds


def _clip_prosody(speaker: Speaker, style: EmotionStyle, rng: np.random.Generator) -> Prosody:
    x = speaker.expressiveness
    return Prosody(
        rate=round(speaker.rate * style.rate**x * math.exp(rng.normal(0, 0.04))),
        pitch=round(speaker.pitch + x * style.pitch + rng.normal(0, 2.5)),
        pitch_range=round(speaker.pitch_range + x * style.pitch_range + rng.normal(0, 4)),
        volume=round(speaker.volume + x * style.volume + rng.normal(0, 5)),
        word_gap=max(0, round(x * style.word_gap + rng.normal(0, 0.7))),
    ).checked()


def plan_corpus(cfg: DemoConfig, seed: int) -> list[ClipPlan]:
    """The design of every clip (speaker, emotion, words, prosody, votes); no audio is made.

    Speakers get balanced clip counts and each speaker cycles through the emotions, so every
    speaker has every emotion once it has as many clips as there are emotions.
    """
    validate_config(cfg)
    root = np.random.SeedSequence(seed)
    speaker_seq, rater_seq, layout_seq, clips_seq = root.spawn(4)
    speakers = _design_speakers(cfg.n_speakers, np.random.default_rng(speaker_seq))
    raters = _design_raters(np.random.default_rng(rater_seq))
    layout = np.random.default_rng(layout_seq)

    owners = layout.permutation(np.arange(cfg.n_clips) % cfg.n_speakers)
    offsets = layout.integers(0, len(cfg.emotions), size=cfg.n_speakers)
    seen = np.zeros(cfg.n_speakers, dtype=int)
    emotions = []
    for s in owners:
        emotions.append(cfg.emotions[(offsets[s] + seen[s]) % len(cfg.emotions)])
        seen[s] += 1
    kinds = _text_kinds(cfg, emotions, layout)

    plans = []
    for i, (s, emotion, kind, clip_seq) in enumerate(
        zip(owners, emotions, kinds, clips_seq.spawn(cfg.n_clips))
    ):
        rng = np.random.default_rng(clip_seq)
        if kind == "incongruent":
            others = [e for e in cfg.emotions if e not in ("neutral", emotion)]
            text_emotion = str(rng.choice(others))
        else:
            text_emotion = "neutral" if kind == "neutral" else emotion
        text = str(rng.choice(SENTENCES[text_emotion]))
        speaker = speakers[s]
        prosody = _clip_prosody(speaker, EMOTION_STYLES[emotion], rng)
        n_votes = int(rng.integers(cfg.annotators_min, cfg.annotators_max + 1))
        chosen = sorted(rng.choice(len(raters), size=n_votes, replace=False))
        clarity = float(rng.beta(6, 1.2))
        votes = tuple(
            (raters[r].id, _vote(raters[r], emotion, text_emotion, clarity, cfg.emotions, rng))
            for r in chosen
        )
        plans.append(ClipPlan(
            utt_id=f"demo_{i + 1:05d}", speaker=speaker, emotion=emotion,
            text_emotion=text_emotion, text=text, prosody=prosody,
            synth_seed=int(rng.integers(1, 2**31 - 1)), votes=votes,
        ))
    return plans


def _render(plan: ClipPlan, sample_rate: int, path: Path) -> None:
    """Speak one clip and write it as 16-bit PCM (written aside, then moved into place)."""
    samples, sr = synthesize(plan.text, plan.speaker.voice, plan.prosody, plan.synth_seed)
    audio = resample(samples.astype(np.float32) / 32768.0, sr, sample_rate)
    pcm = np.round(np.clip(audio, -1.0, 32767 / 32768) * 32768).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    sf.write(tmp, pcm, sample_rate, subtype="PCM_16", format="WAV")
    tmp.replace(path)


def _spec(cfg: DemoConfig, seed: int, plans: list[ClipPlan]) -> dict:
    identity = {
        "generator_version": GENERATOR_VERSION,
        "synthesizer": backend().version,
        "seed": seed,
        "config": dataclasses.asdict(cfg),
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return {**identity, "hash": digest, "files": [p.audio_path for p in plans]}


def _read_spec(spec_path: Path) -> dict | None:
    """The spec an earlier run left, None when there is none; a clear error when corrupt."""
    if not spec_path.exists():
        return None
    try:
        spec = json.loads(spec_path.read_text())
        if not isinstance(spec, dict) or not all(isinstance(f, str) for f in spec["files"]):
            raise ValueError("no list of files")
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{spec_path} is unreadable ({exc}); remove it and the audio it lists by hand"
        ) from exc
    return spec


def _remove_listed(audio_dir: Path, files: list[str]) -> None:
    """Delete the WAVs an earlier spec listed (only those), then their emptied folders."""
    for rel in files:
        path = resolve_audio_path(rel, audio_dir)
        path.unlink(missing_ok=True)
        if path.parent != audio_dir.resolve() and not any(path.parent.iterdir()):
            path.parent.rmdir()


def generate_demo_corpus(
    audio_dir: Path, cfg: DemoConfig, seed: int, progress: bool = True
) -> LoadedCorpus:
    """Write the demo corpus's WAVs under `audio_dir` and return one record per clip.

    `audio_dir/demo_spec.json` identifies what the folder holds; when it matches (config, seed,
    generator and eSpeak version) and every file exists, the audio is reused as is. Otherwise
    the files of the old spec are removed and everything is synthesised again.
    """
    audio_dir = Path(audio_dir)
    plans = plan_corpus(cfg, seed)
    spec = _spec(cfg, seed, plans)
    spec_path = audio_dir / SPEC_FILE
    old = _read_spec(spec_path)
    reusable = (
        old is not None and old.get("hash") == spec["hash"] and old.get("complete") is True
        and all((audio_dir / p.audio_path).is_file() for p in plans)
    )
    if not reusable:
        if old is not None:
            _remove_listed(audio_dir, old["files"])
            spec_path.unlink()
        audio_dir.mkdir(parents=True, exist_ok=True)
        # Listed before synthesis, so an interrupted run's files are cleaned up later too.
        spec_path.write_text(json.dumps({**spec, "complete": False}, indent=1))
        for plan in tqdm(plans, desc="demo corpus", unit="clip", disable=not progress):
            _render(plan, cfg.sample_rate, audio_dir / plan.audio_path)
        spec_path.write_text(json.dumps({**spec, "complete": True}, indent=1))
    return LoadedCorpus(utterances=[
        RawUtterance(
            utt_id=p.utt_id, audio_path=p.audio_path, speaker=p.speaker.id,
            gender=p.speaker.gender, votes=list(p.votes), transcript=p.text,
        )
        for p in plans
    ])
