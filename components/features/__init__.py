"""The features stage's per-utterance extractors.

- `prosody`: F0 track, prosody measurements and intonation contour (Praat via parselmouth);
- `egemaps`: the 88 eGeMAPS v02 functionals (openSMILE);
- `asr`: transcripts (Moonshine, PocketSphinx or Whisper) and word error rate;
- `moonshine`: the bundled Moonshine files as ONNX Runtime sessions, greedy decoding;
- `frames`: the frame-level encoder input and its shard files;
- `levels`: low/normal/high levels from cut points fitted on the training split;
- `captions`: a short text caption of the prosody of a clip.

Each works on one utterance (or one table) and returns plain dicts or numpy arrays; the stage
runner adds parallelism, caching and files.
"""
