"""Typed, documented configuration loaded from `params.yaml`.

Each stage has one section; `base` holds what several stages share. Loading is strict: an
unknown key or a value of the wrong type is an error that names the key, so a typo in
`params.yaml` never silently falls back to a default. The sections are pydantic dataclasses in
strict mode, so a section made in code (or by `dataclasses.replace`) is checked the same way.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ConfigDict, ValidationError
from pydantic.dataclasses import dataclass as pydantic_dataclass


class ConfigError(ValueError):
    """params.yaml (or an override) has an unknown key or a value of the wrong type."""


STRICT = ConfigDict(strict=True, extra="forbid")
"""Exact types (not "yes" for true nor "3" for 3; an integer is a valid float), no unknown keys."""


def dataclass(cls: type) -> type:
    """A config section: a pydantic dataclass validated with `STRICT` whenever it is made."""
    return pydantic_dataclass(cls, config=STRICT)


@dataclass
class BaseConfig:
    seed: int = 1234
    """Seed for everything random (demo corpus, splits, training)."""
    labels: list[str] | None = None
    """Target label set (canonical names). None keeps each corpus's own emotion set."""
    device: str = "auto"
    """Where training, evaluation and prediction run: auto (CUDA, else MPS, else CPU), cpu,
    cuda, cuda:<n> or mps. bf16 on CUDA where the GPU supports it, fp32 elsewhere."""


@dataclass
class SplitConfig:
    train: float = 0.7
    dev: float = 0.15
    test: float = 0.15
    by_gender: bool = True
    """Assign speakers to splits within each gender so every split has both."""
    use_official: bool = True
    """Keep a corpus's official split (MSP-Podcast) instead of drawing one."""
    test_speakers: list[str] = field(default_factory=list)
    """Speakers held out for test (e.g. a cross-validation fold); empty: drawn by the ratios."""
    dev_speakers: list[str] = field(default_factory=list)
    """Speakers for dev; empty: drawn by the ratios from the speakers not in test_speakers."""


@dataclass
class DemoConfig:
    n_clips: int = 200
    n_speakers: int = 10
    emotions: list[str] = field(
        default_factory=lambda: ["neutral", "happy", "sad", "angry", "fear", "surprise"]
    )
    annotators_min: int = 5
    annotators_max: int = 7
    sample_rate: int = 16000
    incongruent_share: float = 0.2
    """Share of clips whose words argue for another emotion than the prosody."""
    neutral_text_share: float = 0.4
    """Share of clips with emotionally neutral words."""


@dataclass
class PrepareConfig:
    corpus: str = "demo"
    """demo, ravdess, cremad, msp_podcast, iemocap or emodb."""
    data_dir: str | None = None
    """The corpus folder (the data root of its audio). For the demo corpus: None puts the
    generated audio under `<out>/audio`."""
    out: str = "data/prepared"
    label_map: dict[str, str] = field(default_factory=dict)
    """Canonical label -> target label, applied before the target set (e.g. calm: neutral)."""
    min_agreement: float = 0.0
    """Consensus needs a unique plurality label with at least this share of the votes."""
    split: SplitConfig = field(default_factory=SplitConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    cremad_audio_dir: str | None = None
    """CREMA-D: folder of the AudioWAV files when it is not `<data_dir>/AudioWAV`."""


@dataclass
class ManifestGateConfig:
    manifest: str = "data/prepared/manifest.parquet"
    out: str = "data/gated"
    """The gated manifest (quarantined rows removed) and the quarantine file go here."""
    report_dir: str = "reports/manifest_gate"
    min_duration_s: float = 0.3
    max_duration_s: float = 30.0
    """A clip whose duration is outside [min_duration_s, max_duration_s] is quarantined."""
    max_quarantine_share: float = 0.05
    """The gate fails when more than this share of rows is quarantined (unreadable, empty or
    silent audio, duration out of bounds)."""


@dataclass
class FeaturesConfig:
    manifest: str = "data/gated/manifest.parquet"
    out: str = "data/features"
    levels: str | None = None
    """A levels.json to reuse (dev/test-only manifests, serving); None fits the cut points
    on this manifest's training split."""
    engine: str = "process"
    """process (a local process pool) or ray (Ray Data; a cluster when ray_address is set)."""
    workers: int = 2
    ray_address: str | None = None
    asr: str = "moonshine"
    """Transcriber for clips without a reference and at serving: moonshine (bundled),
    moonshine:<folder>, pocketsphinx or whisper:<model id or path>."""
    asr_on_reference: bool = False
    """Also transcribe clips that have a reference, to report the ASR's WER."""
    frames: bool = True
    """Write the frame-level encoder inputs (log-mel + log-F0 + voicing + energy) as shards."""
    speech_embedding: str = "moonshine"
    """`moonshine`: also a pretrained clip embedding (`speech_embedding`, the bundled Moonshine
    encoder's states mean- and std-pooled, 832 numbers, and `speech_embedding_spknorm`); a
    SpeechLM trained on such features appends it to its prosody vector. `none`: not computed
    (eGeMAPS alone; test UA 0.534 against 0.761 on the RAVDESS speaker folds)."""
    voice_quality: bool = True
    """Jitter, shimmer and HNR (Praat), which the teachers' prompts read; false leaves them NaN
    and saves about half of a clip's acoustic measurement. Serving never measures them."""
    shard_size: int = 256
    cache_dir: str = ".emoreason/cache/features"
    """Content-hash cache of finished clips, outside DVC outputs so it survives re-runs."""


@dataclass
class FeaturesGateConfig:
    features: str = "data/features/features.parquet"
    manifest: str = "data/gated/manifest.parquet"
    report_dir: str = "reports/features_gate"
    out: str = "data/features_gated"
    """The gated manifest (the manifest minus quarantined clips) goes here when the gate
    passes; every later stage reads it."""
    f0_min_hz: float = 50.0
    f0_max_hz: float = 600.0
    """A clip whose F0 median is outside [f0_min_hz, f0_max_hz] is quarantined."""
    max_too_short_share: float = 0.05
    max_uncertain_share: float = 0.35
    max_unusable_share: float = 0.05
    """Rows without a usable F0, energy or eGeMAPS, or with an F0 median out of bounds, go to
    quarantine.csv; more than this share fails the gate."""


TEMPLATE_LEVELS = ("salient", "all")


@dataclass
class TeacherConfig:
    openai_base_url: str = "http://127.0.0.1:8000/v1"
    """Any OpenAI-compatible chat endpoint (vLLM, Ollama, a hosted API)."""
    openai_model: str = "Qwen/Qwen2.5-7B-Instruct"
    openai_api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (never the key itself)."""
    openai_concurrency: int = 8
    openai_timeout_s: float = 60.0
    openai_max_retries: int = 3
    allow_insecure_http: bool = False
    """Send the API key over plain http:// to a host other than this machine (it travels
    unencrypted: a trusted private network only)."""
    hf_model: str = "bundled:smollm2-135m-instruct"
    """A `bundled:` name, a local folder or a hub id (see sft.lm)."""
    hf_batch_size: int = 8
    max_new_tokens: int = 160
    temperature: float = 0.7
    top_p: float = 0.9
    template_levels: str = "salient"
    """The template teacher's voice sentence: `salient` (levels that stand out; normal ones
    only when nothing else was measured) or `all` (every measured level, normal included)."""

    def __post_init__(self):
        if self.template_levels not in TEMPLATE_LEVELS:
            raise ValueError(f"distill.teacher.template_levels must be one of "
                             f"{list(TEMPLATE_LEVELS)}, got {self.template_levels!r}")


@dataclass
class VerifyConfig:
    min_words: int = 30
    max_words: int = 120
    lead_words: int = 4
    """The label (or a word of its family) must not appear among the first words."""
    min_grounding: float = 0.5
    """Share of the rationale's acoustic claims that match the measured levels."""
    min_claims: int = 1
    """A rationale must make at least this many acoustic claims."""


@dataclass
class StarConfig:
    enabled: bool = False
    """Bootstrap: generate without the label, keep what implies the right label, rationalize
    the rest with the label as a hint."""
    iterations: int = 2


@dataclass
class DistillConfig:
    features: str = "data/features/features.parquet"
    manifest: str = "data/features_gated/manifest.parquet"
    out: str = "data/distill"
    backend: str = "template"
    """First teacher: template (offline default), hf or openai."""
    fallback: list[str] = field(default_factory=list)
    """Backends tried in order for clips whose rationale still fails after the retries."""
    prompt_version: str = "teacher_v1"
    retries: int = 1
    """Retries with a hint naming the problem, per backend."""
    splits: list[str] = field(default_factory=lambda: ["train"])
    max_clips: int | None = None
    """Cap on clips (a quick look); None takes every clip with a consensus label."""
    cache: str = ".emoreason/cache/distill/rationales.jsonl"
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    star: StarConfig = field(default_factory=StarConfig)


@dataclass
class RationalesGateConfig:
    rationales: str = "data/distill/rationales.jsonl"
    manifest: str = "data/features_gated/manifest.parquet"
    report_dir: str = "reports/rationales_gate"
    min_keep_rate: float = 0.6
    min_grounding: float = 0.5
    max_label_tv_distance: float = 0.2
    """Total variation distance between the kept rationales' labels and the manifest's."""


@dataclass
class SFTConfig:
    features: str = "data/features/features.parquet"
    frames: str = "data/features/frames"
    manifest: str = "data/features_gated/manifest.parquet"
    rationales: str = "data/distill/rationales.jsonl"
    out: str = "models/sft"
    levels: str = "data/features/levels.json"
    """The training corpus's level cut points, kept with the model for describing new clips."""
    lm: str = "bundled:smollm2-135m-instruct"
    """The causal LM: a `bundled:` name, a local folder or a hub id."""
    encoder: str = "frames"
    """frames (a compact encoder over the frame features, trained from scratch) or
    whisper:<model id or path> (a pretrained Whisper encoder)."""
    encoder_lora_r: int = 0
    """whisper:<model> encoders: LoRA rank on its attention projections (0: frozen)."""
    tokens_per_second: float = 8.0
    """Soft audio tokens per second of audio."""
    audio_dropout: float = 0.1
    prosody_token: bool = True
    """One more soft token per clip from its speaker-normalised eGeMAPS (prosody relative to
    the speaker, which the frames of one clip cannot tell)."""
    frame_norm: str = "feature"
    """Frames encoder input: `feature` (each of the 83 features standardised with the training
    frames' statistics) or `layer` (one LayerNorm over a frame's features, where the energy
    channel dominates)."""
    spec_augment: bool = True
    """SpecAugment (time and feature masks) on the frame features while training."""
    evidence_token: bool = True
    """One more soft token: the emotion probabilities of the encoder warm-up's head and (with
    the prosody token) of the speaker-normalised eGeMAPS logistic regression, as a mix of the
    label words' embeddings (`components.speechlm.evidence`): an ensemble, reported as one.
    Needs the encoder warm-up (`encoder_pretrain_epochs` > 0)."""
    level_evidence: bool = True
    """One more soft token per perception task (pitch, energy, rate, intonation): the warm-up's
    level head and an eGeMAPS logistic regression on the level, as a mix of the level words'
    embeddings. The perception answers' way to the LM; needs the warm-up and the perception
    tasks (`perception_ratio` > 0) that train the heads."""
    evidence_power_grid: list[float] = field(default_factory=lambda: [1.0, 2.0, 3.0, 5.0])
    """Sharpening powers of the evidence token (`SpeechLMConfig.evidence_power`) tried after
    training on the dev clips' labels; the one with the best dev UA is kept with the model
    (the smallest on a tie), [1.0]: none; without an evidence token it is not read. Training
    always sees power 1."""
    prosody_caption: bool = True
    """The clip's prosody caption (its measured pitch, range, intonation, energy, rate and pauses
    in words) in SER prompts: the rationale's cue claims can then follow the measurement
    instead of a guess from the soft tokens. Perception prompts never hold it: the perception
    answers stay a test of what the model hears."""
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    format: str = "explain_after"
    """explain_after (Transcript / Emotion / Rationale) or reason_first (<think>/<answer>)."""
    transcript_source: str = "asr"
    """asr: the features' transcript is in the prompt; model: the model writes it."""
    perception_ratio: float = 0.5
    """Prosody-perception examples per SER example, and perception heads in the encoder warm-up
    (0 turns prosody enhancement off)."""
    population_norm_share: float = 0.3
    """Share of the examples (per split, drawn with the seed) whose prosody token is
    normalised with the training population's statistics instead of the speaker's: how a single
    served clip of an unknown speaker is normalised, so the model must have seen it."""
    epochs: int = 2
    max_steps: int = -1
    """A cap on optimizer steps (-1: the epochs decide)."""
    batch_size: int = 4
    group_by_length: bool = True
    """Batches of examples of similar length, in random order (`speechlm.batching`): SER and
    perception examples differ about threefold in length, so random batches are mostly
    padding-bound."""
    learning_rate: float = 3e-4
    answer_weight: float = 10.0
    """Loss weight of the label (and perception answer) tokens against 1 for the rest of the
    target: the decision that needs the audio is otherwise a few percent of the loss."""
    claim_weight: float = 1.0
    """Loss weight of the words of a rationale that state a measured level ("the speaking
    rate is fast"), against 1 for the rest: the LM must copy them from the caption and the
    audio, while the words around them follow from the label."""
    label_smoothing: float = 0.1
    """Share of the SER label token's target spread evenly over the label set's tokens
    (0: the hard label). A model that gives its top label ~1 leaves GRPO's sampled answers
    nothing to disagree on (see `components.speechlm.train.smooth_labels`); on three RAVDESS
    speaker folds 0.1 cut ECE from 0.235 to 0.143 at the same UA."""
    calibrate: bool = True
    """Fit the label temperature on the dev clips after training and save it with the model
    (`components.speechlm.calibration`): the label stays, its probabilities stop claiming
    certainty the model does not have. False: the LM's own label probabilities."""
    activation_checkpointing: bool = False
    """Recompute each LM layer's activations in the backward pass instead of keeping them:
    less memory for a large LM on a GPU, one more forward pass per step; the same loss and
    gradients (tests/test_sft_stage.py). Off by default: the bundled LM fits without it."""
    encoder_learning_rate: float = 1e-4
    """The projectors (and the warmed-up encoder, unless frozen) during SFT: low, so the LM
    learns to read them."""
    freeze_warmed_encoder: bool = True
    """Keep the encoder and the prosody projector as the warm-up left them during SFT: the
    evidence tokens' heads were fitted on them, and an encoder trained on through the LM's loss
    drifts away from its heads (on RAVDESS fold 0 the warm-up head fell from UA 0.539 to 0.512
    over the SFT-trained encoder). The frame projector and the LM's LoRA still train; an adapted
    Whisper encoder's LoRA (`encoder_lora_r`) trains in the warm-up only."""
    encoder_pretrain_epochs: int = 6
    """Epochs of training the encoder as an emotion classifier before SFT (0: none)."""
    encoder_pretrain_learning_rate: float = 1e-3
    encoder_pretrain_keep_best: bool = True
    """Keep the warm-up epoch with the best dev accuracy, not the last: the encoder learns its
    training clips by heart long before the last epoch, and an LM trained on those soft tokens
    learns to copy them."""
    early_stopping_patience: int = 2
    """Evaluations (each epoch, or every `save_steps`) without a better dev loss before stopping."""
    save_steps: int = 0
    """Optimizer steps between checkpoints, each after a dev-loss evaluation (0: each epoch)."""
    checkpoint_dir: str = ".emoreason/checkpoints/sft"
    """Checkpoints of an unfinished training, outside DVC outputs so a killed run resumes."""
    max_target_words: int = 40
    """Rationales are cut to this many words in the targets (shorter sequences, faster steps)."""
    eval_clips: int = 60
    """Dev clips decoded after training for the accuracy check and sample generations, evenly
    spaced over the split (so over its speakers); the zero-shot baseline scores the same."""

    def __post_init__(self):
        if self.evidence_token and self.encoder_pretrain_epochs <= 0:
            raise ValueError("sft.evidence_token needs the encoder warm-up that trains its head: "
                             "set sft.encoder_pretrain_epochs > 0 or sft.evidence_token: false")
        if not self.evidence_power_grid or any(not p > 0 for p in self.evidence_power_grid):
            raise ValueError("sft.evidence_power_grid needs one or more powers > 0, got "
                             f"{self.evidence_power_grid}")
        if self.level_evidence and (self.encoder_pretrain_epochs <= 0 or self.perception_ratio <= 0):
            raise ValueError("sft.level_evidence needs the encoder warm-up and the perception tasks "
                             "that train its level heads: set sft.encoder_pretrain_epochs > 0 and "
                             "sft.perception_ratio > 0, or sft.level_evidence: false")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"sft.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.freeze_warmed_encoder and self.encoder_pretrain_epochs <= 0:
            raise ValueError("sft.freeze_warmed_encoder keeps the warm-up's encoder: set "
                             "sft.encoder_pretrain_epochs > 0 or sft.freeze_warmed_encoder: false")


@dataclass
class ZeroShotConfig:
    """The "base LM zero-shot" baseline: the LM without LoRA or audio, given the transcript and
    the prosody caption as text."""
    features: str = "data/features/features.parquet"
    levels: str = "data/features/levels.json"
    manifest: str = "data/features_gated/manifest.parquet"
    out: str = "models/zeroshot"
    lm: str = "bundled:smollm2-135m-instruct"
    format: str = "explain_after"
    eval_clips: int = 60
    max_new_tokens: int = 96


@dataclass
class JudgeConfig:
    """An LLM judge of rationales (EmotionThinker's four criteria) behind an OpenAI-compatible
    chat endpoint; off by default (the pipeline runs offline)."""
    enabled: bool = False
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "Qwen/Qwen2.5-7B-Instruct"
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (never the key itself)."""
    concurrency: int = 8
    timeout_s: float = 60.0
    max_retries: int = 3
    max_new_tokens: int = 120
    allow_insecure_http: bool = False
    """Send the API key over plain http:// to a host other than this machine (a trusted
    private network only)."""


@dataclass
class EvaluateConfig:
    """Scoring on the test split: baselines and models side by side, annotator-aware."""
    features: str = "data/features/features.parquet"
    manifest: str = "data/features_gated/manifest.parquet"
    split: str = "test"
    out: str = "reports/evaluate"
    models: dict[str, str] = field(default_factory=lambda: {
        "zeroshot": "models/zeroshot", "sft": "models/sft", "rl": "models/rl"})
    """System name -> model folder; folders that do not exist are left out (e.g. rl)."""
    encoder_of: str = "sft"
    """The model whose warmed-up encoder and head give the `encoder` row."""
    reference: str = "egemaps_lr_speaker"
    """The system each model is compared with by paired bootstrap."""
    lr_c_grid: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0])
    """Logistic-regression C values tried on the dev split (never the test split)."""
    rationale: bool = True
    """Generate rationales (their quality is scored); False scores labels only (faster)."""
    max_new_tokens: int = 96
    batch_size: int = 8
    n_boot: int = 1000
    max_clips: int | None = None
    """Score only this many test clips, spread over the split (a quick look); None: all."""
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    refine_systems: list[str] = field(default_factory=lambda: ["sft"])
    """Systems whose self-correction rounds are scored when inference.self_correct_rounds > 0
    (each instruction and the control, K rounds each)."""


@dataclass
class RegisterConfig:
    """The MLflow Model Registry entry of the evaluated model and its promotion gate."""
    system: str = "sft"
    """Which evaluated system (a key of evaluate.models) is registered."""
    model_name: str = "emoreason"
    gate_metric: str = "annotator_aware_macro_f1"
    grounding_tolerance: float = 0.05
    """champion moves only if rationale grounding drops by at most this much."""
    metrics: str = "reports/evaluate/metrics.json"
    out: str = "reports/register"


RECHECK = ("Check your answer again. Does the emotion fit both the words and how they are "
           "said? If it does not, correct it. Answer in the same form.")
EVIDENCE = ("Check your rationale against the measured voice: pitch {pitch}, pitch range "
            "{pitch_range}, loudness {energy}, speaking rate {rate}, pauses {pauses}, intonation "
            "{intonation}; the words: \"{transcript}\". Where your answer disagrees with them, "
            "revise the emotion and the rationale. Answer in the same form.")
CONTROL = ("Repeat your answer. Give the same emotion and the same rationale again, word for "
           "word, in exactly the same form as you gave it to me before.")
"""The control follow-up asks for nothing new and has about the length of RECHECK (in
tokens), so a change it causes is the effect of any follow-up turn, not of a correction."""


@dataclass
class InferenceConfig:
    """How answers are decoded (`repeat_block`, `claim_guard`) and self-correction at
    inference (arXiv 2505.11924): after its first answer the model is shown its answer and a
    follow-up instruction and may revise label and rationale, K times."""
    self_correct_rounds: int = 0
    """Refinement rounds after the first answer; 0 = off."""
    self_correct_instruction: str = "evidence"
    """The instruction `emoreason predict` uses (a key of `instructions`)."""
    instructions: dict[str, str] = field(default_factory=lambda: {
        "recheck": RECHECK, "evidence": EVIDENCE})
    """Name -> follow-up text. Fields a text may name: {pitch}, {pitch_range}, {energy},
    {rate}, {pauses}, {intonation} (the measured levels) and {transcript}."""
    control: str = CONTROL
    repeat_block: list[int] | None = field(default_factory=lambda: [3, 2])
    """[n, k]: no run of n words of a generated text occurs more than k times (greedy decoding
    with `components.serve.repeat_block`); null: plain greedy decoding."""
    claim_guard: bool = True
    """A generated cue claim must agree with the clip's measured levels: the few most likely
    tokens that would add one that does not are banned (`components.serve.claim_guard`)."""

    def __post_init__(self):
        if self.self_correct_rounds < 0:
            raise ValueError("inference.self_correct_rounds must be >= 0")
        if self.repeat_block is not None and (
                len(self.repeat_block) != 2 or min(self.repeat_block) < 1):
            raise ValueError(f"inference.repeat_block must be [n, k] with n >= 1 and k >= 1 "
                             f"(or null), got {self.repeat_block}")
        if self.self_correct_instruction not in self.instructions:
            raise ValueError(f"inference.self_correct_instruction "
                             f"{self.self_correct_instruction!r} is not one of "
                             f"{sorted(self.instructions)}")


@dataclass
class ProbeConfig:
    """The concept-shift probe: how a follow-up instruction moves the LM's last hidden state,
    read through the output embedding as a change of each token's logit."""
    model: str = "models/sft"
    features: str = "data/features/features.parquet"
    manifest: str = "data/features_gated/manifest.parquet"
    split: str = "test"
    max_clips: int = 40
    """Clips spread over the split (the probe needs forward passes only, no generation)."""
    pair: dict[str, str] = field(default_factory=lambda: {
        "calmer": "Listen again: the speaker sounds calmer than you said. Revise your answer.",
        "angrier": "Listen again: the speaker sounds angrier than you said. Revise your answer."})
    """Two opposite instructions whose shifts should move `target`'s words apart."""
    target: str = "angry"
    """The emotion the pair is about (its label words are read)."""
    n_random: int = 1000
    """Random token sets per emotion for the z-scores."""
    top_k: int = 15
    max_new_tokens: int = 64
    batch_size: int = 8
    out: str = "reports/probe"


@dataclass
class ServeConfig:
    max_duration_s: float = 60.0
    """Longer inputs are refused with a per-row error, never fed whole to the encoder."""
    batch_size: int = 8
    dtype: str = "float32"
    """Weights when serving and predicting: float32 (as trained), bfloat16 or int8 (dynamic
    quantization of the LM; see benchmarks/bench_serve.py for speed and label agreement)."""


@dataclass
class PTRConfig:
    """The progressive, trust-aware reasoning reward (EmotionThinker's GRPO-PTR)."""
    tau: bool = True
    """Weight R_t by the group's trust tau = exp(mu_c - mu_w) when mu_c < mu_w (ablation: false)."""
    schedule: bool = True
    """Leave R_t out until the running training accuracy reaches `accuracy_threshold`
    (ablation: false, R_t from the first step)."""
    accuracy_threshold: float = 0.5
    accuracy_window: int = 64
    """Completions in the running training accuracy."""


@dataclass
class RayTrainConfig:
    """Where the RL stage's Ray Train workers run."""
    address: str | None = None
    """None: a local Ray started for the stage (CPU workers); else a cluster (ray://host:10001
    or auto)."""
    num_workers: int = 2
    """Data-parallel training workers (gradients all-reduced)."""
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0
    """Used when use_gpu."""
    reward_actor_cpus: float = 1.0
    """CPUs of the Ray actor that serves a judge or learned reasoning scorer."""


@dataclass
class RLConfig:
    """GRPO-PTR from the SFT model: G sampled completions per training clip, rewarded for
    format, outcome and reasoning, LoRA updates with a KL penalty to the SFT reference."""
    sft: str = "models/sft"
    features: str = "data/features/features.parquet"
    frames: str = "data/features/frames"
    manifest: str = "data/features_gated/manifest.parquet"
    out: str = "models/rl"
    rewards: dict[str, float] = field(default_factory=lambda: {
        "format": 0.3, "outcome": 1.0, "reasoning": 0.5})
    """Reward name (see components.rl.rewards.REWARDS) -> weight: R = 0.3 R_f + 1.0 R_o +
    0.5 tau R_t. `outcome_annotator_aware` may replace `outcome`; a `module:function` key adds
    a reward of one's own (TRL's reward signature)."""
    partial_credit: float = 0.5
    """outcome_annotator_aware: reward of a label some annotator chose but not the consensus."""
    reasoning_scorer: str = "grounded"
    """grounded (claims checked against the measured cues) | judge (LLM endpoint) | model
    (a trained scorer at `reasoning_model`)."""
    reasoning_model: str | None = None
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    ptr: PTRConfig = field(default_factory=PTRConfig)
    num_generations: int = 8
    """G: completions per prompt."""
    prompts_per_step: int = 1
    """Prompts per optimizer step, over all workers (each brings G completions)."""
    max_new_tokens: int = 80
    temperature: float = 1.0
    beta: float = 0.04
    """KL penalty to the SFT reference (the adapter-disabled model with LoRA)."""
    epsilon: float = 0.2
    """Clip range of the policy ratio."""
    learning_rate: float = 1e-5
    max_uniform_group: float = 1.0
    """Leave out the clips whose G completions would all get the same outcome reward with a
    probability above this, by the SFT model's own label probability
    (`components.rl.prompt_filter`); 1: keep every clip."""
    calibrate: bool = True
    """Fit the policy's label temperature on the dev clips after training (as `sft.calibrate`;
    GRPO sharpens the label probabilities). It needs dev clips the policy did not train on:
    with dev in `splits`, set it to false (the policy's own probabilities; the SFT model's
    temperature no longer fits them)."""
    activation_checkpointing: bool = False
    """Recompute the LM layers in the backward pass (TRL's default): less memory for a large
    LM on a GPU, one more forward per step; off for the bundled LM, which fits without it."""
    max_steps: int = 4
    save_steps: int = 2
    log_completions_steps: int = 2
    """Steps between tables of sample completions with their rewards."""
    splits: list[str] = field(default_factory=lambda: ["train"])
    """Splits whose clips are the prompts: train (the clips SFT learned, which it mostly
    answers right every time), dev (speakers SFT never trained on, which it gets wrong more
    often), or both. Never test."""
    max_clips: int | None = None
    """Train on this many clips of `splits` (spread over speakers and labels); None: all."""
    checkpoint_dir: str = ".emoreason/checkpoints/rl"
    ray: RayTrainConfig = field(default_factory=RayTrainConfig)

    def __post_init__(self):
        if not self.splits or not set(self.splits) <= {"train", "dev"} \
                or len(set(self.splits)) < len(self.splits):
            raise ValueError(f"rl.splits must name train and/or dev once each, got {self.splits}")
        if self.calibrate and "dev" in self.splits:
            raise ValueError("rl.calibrate fits the label temperature on the dev clips, and "
                             f"rl.splits {self.splits} trains on them: set rl.calibrate to "
                             "false, or train on train only")
        if not 0.0 < self.max_uniform_group <= 1.0:
            raise ValueError(f"rl.max_uniform_group must be in (0, 1], got "
                             f"{self.max_uniform_group}")


@dataclass
class TrackingConfig:
    tracking_uri: str | None = None
    """None: $MLFLOW_TRACKING_URI, else a SQLite file in the project (mlflow.db)."""
    experiment: str = "emoreason"


@dataclass
class Params:
    base: BaseConfig = field(default_factory=BaseConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    manifest_gate: ManifestGateConfig = field(default_factory=ManifestGateConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    features_gate: FeaturesGateConfig = field(default_factory=FeaturesGateConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    rationales_gate: RationalesGateConfig = field(default_factory=RationalesGateConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    zeroshot: ZeroShotConfig = field(default_factory=ZeroShotConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


_EXPECTED = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
             "string_type": "a string", "list_type": "a list", "dict_type": "a mapping"}
"""How an error message names the type pydantic wanted."""


def _key(prefix: str, loc: tuple) -> str:
    """The dotted key of a pydantic error location: `base.labels[1]`, `prepare.label_map key`."""
    suffix = ""
    if loc and loc[-1] == "[key]":
        loc, suffix = loc[:-2], " key"
    key = prefix
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else f".{part}" if key else str(part)
    return key + suffix


def _describe(error: dict, cls: type, prefix: str) -> str:
    key = _key(prefix, error["loc"])
    if error["type"] == "unexpected_keyword_argument":
        return f"unknown key {key} (known: {', '.join(sorted(f.name for f in dataclasses.fields(cls)))})"
    value = error["input"]
    if error["type"] in _EXPECTED:
        got = type(value).__name__ if error["type"] in ("list_type", "dict_type") else repr(value)
        return f"{key}: expected {_EXPECTED[error['type']]}, got {got}"
    return f"{key}: {error['msg'][:1].lower()}{error['msg'][1:]}, got {value!r}"


def _build(cls: type, data: Any, prefix: str) -> Any:
    """`cls` from a mapping, every error of every section in one ConfigError. Nested sections are
    built first: strict pydantic takes a section only as an instance, not as a mapping."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'params'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    kwargs, errors = {}, []
    for name, value in data.items():
        if not isinstance(name, str):
            errors.append(f"unknown key {_key(prefix, (repr(name),))}")
            continue
        if dataclasses.is_dataclass(hints.get(name)):
            try:
                value = _build(hints[name], value, _key(prefix, (name,)))
            except ConfigError as exc:
                errors.append(str(exc))
                continue
        kwargs[name] = value
    try:
        built = cls(**kwargs)
    except ValidationError as exc:
        errors += [_describe(error, cls, prefix) for error in exc.errors()]
    if errors:
        raise ConfigError("; ".join(errors))
    return built


def params_from_dict(data: dict | None) -> Params:
    """Validate a params mapping into `Params`; missing keys take their documented defaults."""
    return _build(Params, data or {}, "")


def load_params(path: Path | str = "params.yaml") -> Params:
    """Load params.yaml; a missing file gives the defaults, a malformed one a ConfigError."""
    path = Path(path)
    if not path.exists():
        return Params()
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from exc
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections")
    try:
        return params_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def as_dict(params: Any) -> dict:
    """A plain dict of a config dataclass, for logging and artifacts."""
    return dataclasses.asdict(params)
