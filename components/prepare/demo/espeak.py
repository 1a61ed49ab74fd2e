"""Text to speech with eSpeak NG, for the synthetic demo corpus.

The library shipped by the `espeakng-loader` wheel is driven through ctypes, so the demo runs
offline with nothing installed on the system; the `espeak-ng` program is the fallback when the
library cannot be loaded. The backend is chosen once per process; the library's global state
is reset for every utterance (see LibraryBackend), so a clip sounds the same whatever was
spoken before it. Not thread-safe.
"""
from __future__ import annotations

import _ctypes
import ctypes
import io
import os
import shutil
import subprocess
from dataclasses import dataclass
from xml.sax.saxutils import escape

import numpy as np
import soundfile as sf


class SynthesisError(RuntimeError):
    """eSpeak NG is unavailable or failed to synthesise a text."""


@dataclass(frozen=True)
class Prosody:
    """eSpeak parameters of one utterance (the units eSpeak uses)."""

    rate: int
    """Words per minute (eSpeak accepts about 80-450)."""
    pitch: int
    """Base pitch, 0-99 (50 is the voice's default)."""
    pitch_range: int
    """Pitch range, 0-99 (0 is monotone, 50 the voice's default)."""
    volume: int
    """Amplitude, 0-200 (100 is the default)."""
    word_gap: int
    """Extra pause between words, in units of 10 ms."""

    def checked(self) -> Prosody:
        """Values clipped into eSpeak's accepted ranges."""
        return Prosody(
            rate=int(np.clip(self.rate, 80, 450)),
            pitch=int(np.clip(self.pitch, 0, 99)),
            pitch_range=int(np.clip(self.pitch_range, 0, 99)),
            volume=int(np.clip(self.volume, 0, 200)),
            word_gap=int(np.clip(self.word_gap, 0, 100)),
        )


# espeak_AUDIO_OUTPUT, espeak_PARAMETER, flags and status values from speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EE_OK = 0
_RATE, _VOLUME, _PITCH, _RANGE, _WORDGAP = 1, 2, 3, 4, 7

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class LibraryBackend:
    """libespeak-ng from the espeakng-loader wheel, in synchronous mode.

    eSpeak keeps state from one utterance to the next in function-level statics (the pitch
    flutter phase, the gain control), which `espeak_Terminate` does not reset, so the same call
    would give slightly different samples depending on what was spoken before. Each utterance
    therefore runs in a freshly loaded copy of the library (load, initialise, speak, unload:
    about 5 ms), which makes a clip's samples depend on its own inputs only, whatever the order
    or the worker process. Needs a POSIX dlopen/dlclose.
    """

    def __init__(self) -> None:
        import espeakng_loader

        try:
            self._path = espeakng_loader.get_library_path()
            self._data_path = espeakng_loader.get_data_path().encode()
        except RuntimeError as exc:
            raise SynthesisError(f"espeakng-loader has no eSpeak NG data ({exc})") from exc
        self._chunks: list[np.ndarray] = []
        # Keep a reference: the library calls it back while speaking.
        self._callback = _SYNTH_CALLBACK(self._collect)
        lib, self.sample_rate = self._load()
        self.version = "libespeak-ng " + lib.espeak_Info(None).decode()
        self._unload(lib)

    def _load(self) -> tuple[ctypes.CDLL, int]:
        try:
            lib = ctypes.CDLL(self._path)
        except OSError as exc:
            raise SynthesisError(f"cannot load {self._path} ({exc})") from exc
        lib.espeak_Initialize.argtypes = [
            ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
        ]
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        lib.espeak_Info.restype = ctypes.c_char_p
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = None
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self._data_path, 0)
        if sample_rate <= 0:
            self._unload(lib)
            raise SynthesisError(
                f"espeak_Initialize failed with data at {self._data_path.decode()}"
            )
        lib.espeak_SetSynthCallback(self._callback)
        return lib, sample_rate

    def _unload(self, lib: ctypes.CDLL) -> None:
        lib.espeak_Terminate()
        _ctypes.dlclose(lib._handle)
        try:
            still = ctypes.CDLL(self._path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
        except OSError:
            return
        _ctypes.dlclose(still._handle)
        raise SynthesisError(
            f"{self._path} stays loaded after unloading (another module in this process holds "
            "it), so its state cannot be reset between utterances and output would depend on "
            "call order; synthesise the demo corpus in a separate process"
        )

    def _collect(self, wav, n_samples, _events) -> int:
        if wav and n_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
        return 0

    def synthesize(self, text: str, voice: str, prosody: Prosody, seed: int) -> np.ndarray:
        lib, _ = self._load()
        try:
            if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                raise SynthesisError(f"eSpeak NG has no voice {voice!r}")
            for param, value in (
                (_RATE, prosody.rate), (_VOLUME, prosody.volume), (_PITCH, prosody.pitch),
                (_RANGE, prosody.pitch_range), (_WORDGAP, prosody.word_gap),
            ):
                lib.espeak_SetParameter(param, value, 0)
            # Variants with breath noise draw it from eSpeak's own generator.
            lib.espeak_ng_SetRandSeed(seed)
            data = text.encode("utf-8") + b"\0"
            self._chunks = []
            status = lib.espeak_Synth(
                data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            if status != _EE_OK or lib.espeak_Synchronize() != _EE_OK:
                raise SynthesisError(f"espeak_Synth failed (status {status}) for {text!r}")
        finally:
            self._unload(lib)
        chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


class ProgramBackend:
    """The `espeak-ng` command-line program, one process per utterance.

    The pitch range goes in as SSML prosody (the program's -P option only exists from 1.52).
    Each run starts fresh, so output is repeatable, but its noise cannot be seeded.
    """

    def __init__(self, program: str) -> None:
        self._program = program
        result = subprocess.run([program, "--version"], capture_output=True, text=True)
        if result.returncode != 0:
            raise SynthesisError(f"{program} --version failed: {result.stderr.strip()}")
        self.version = result.stdout.split("Data at")[0].strip()
        probe = self._run("a", "en", Prosody(175, 50, 50, 100, 0))
        self.sample_rate = sf.info(io.BytesIO(probe)).samplerate

    def _run(self, text: str, voice: str, prosody: Prosody) -> bytes:
        ssml = f'<speak><prosody range="{prosody.pitch_range}">{escape(text)}</prosody></speak>'
        cmd = [
            self._program, "--stdout", "-m", "-v", voice, "-s", str(prosody.rate),
            "-p", str(prosody.pitch), "-a", str(prosody.volume), "-g", str(prosody.word_gap),
            ssml,
        ]
        result = subprocess.run(cmd, capture_output=True)
        if result.returncode != 0:
            raise SynthesisError(f"{' '.join(cmd)} failed: {result.stderr.decode().strip()}")
        return result.stdout

    def synthesize(self, text: str, voice: str, prosody: Prosody, seed: int) -> np.ndarray:
        audio, _ = sf.read(io.BytesIO(self._run(text, voice, prosody)), dtype="int16")
        return audio


_backend: tuple[int, LibraryBackend | ProgramBackend] | None = None


def backend() -> LibraryBackend | ProgramBackend:
    """This process's eSpeak NG backend: the wheel's library, else the `espeak-ng` program."""
    global _backend
    if _backend is not None and _backend[0] == os.getpid():
        return _backend[1]
    try:
        chosen: LibraryBackend | ProgramBackend = LibraryBackend()
    except (ImportError, SynthesisError) as lib_error:
        program = shutil.which("espeak-ng")
        if program is None:
            raise SynthesisError(
                f"eSpeak NG is not available: {lib_error}; and no `espeak-ng` program on PATH. "
                "Install the espeakng-loader wheel or the espeak-ng package."
            ) from lib_error
        chosen = ProgramBackend(program)
    _backend = (os.getpid(), chosen)
    return chosen


def synthesize(text: str, voice: str, prosody: Prosody, seed: int = 0) -> tuple[np.ndarray, int]:
    """Speak `text` with an eSpeak voice name ("en-us", "en+f2", ...): (int16 samples, rate).

    `seed` seeds eSpeak's noise generator, so the same call gives the same samples.
    """
    engine = backend()
    audio = engine.synthesize(text, voice, prosody.checked(), seed)
    if audio.size == 0:
        raise SynthesisError(f"eSpeak NG produced no audio for {text!r} with voice {voice!r}")
    return audio, engine.sample_rate
