"""Many inputs in, one answer per input out: the path shared by `emoreason predict` and the
served pyfunc. An input that cannot be used gets its own error; the usable ones are decoded,
measured and predicted together in batches, and if a decoded clip still breaks the batch the
clips are answered one at a time, so only the clip at fault gets the error."""
from __future__ import annotations

from components.serve.inputs import AudioInputError, decode_audio_checked

EMPTY = {"transcript": None, "label": None, "probabilities": None, "rationale": None,
         "cues": None, "well_formed": None}


def predict_rows(predictor, values: list, speakers: list[str | None] | None = None,
                 rationale: bool = True, max_duration_s: float = 60.0,
                 batch_size: int = 8, transcripts: list[str | None] | None = None,
                 ) -> list[dict]:
    """One dict per input, in order: the predictor's fields plus `flags` (e.g. silence) and
    `error` (None, or why this input was not answered). `values`: file paths or base64
    audio; `speakers`: optional speaker per input (clips of one speaker are normalised over
    each other); `transcripts`: optional transcript per input (given, it replaces speech
    recognition for that clip)."""
    speakers = list(speakers) if speakers is not None else [None] * len(values)
    transcripts = list(transcripts) if transcripts is not None else [None] * len(values)
    for name, given in (("speakers", speakers), ("transcripts", transcripts)):
        if len(given) != len(values):
            raise ValueError(f"{len(values)} inputs but {len(given)} {name}")
    results: list[dict] = [{}] * len(values)
    good, audio, flags = [], [], {}
    for i, value in enumerate(values):
        try:
            clip, clip_flags = decode_audio_checked(value, max_duration_s)
        except AudioInputError as exc:
            results[i] = {**EMPTY, "flags": [], "error": str(exc)}
            continue
        good.append(i)
        audio.append(clip)
        flags[i] = clip_flags
    if good:
        try:
            answers = predictor.predict_audio(audio, [speakers[i] for i in good], rationale,
                                              batch_size, [transcripts[i] for i in good])
        except Exception:  # noqa: BLE001 (a clip's failure must not take the others down)
            answers = []
            for i, clip in zip(good, audio):
                try:
                    answers += predictor.predict_audio([clip], [speakers[i]], rationale, 1,
                                                       [transcripts[i]])
                except Exception as exc:  # noqa: BLE001
                    answers.append({**EMPTY, "error": f"prediction failed: "
                                                      f"{type(exc).__name__}: {exc}"})
        for i, answer in zip(good, answers):
            if answer.get("error"):
                results[i] = {**answer, "flags": flags[i]}
                continue
            answer = {k: v for k, v in answer.items() if k != "output"}
            results[i] = {**answer, "flags": flags[i], "error": None}
    return results
