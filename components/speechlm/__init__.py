"""The SpeechLM: an audio encoder and projector whose soft tokens fill audio placeholders in a
causal LM's prompt, with LoRA on the LM.

Import from the submodules (this package stays light, so importing e.g. its prompt formats does
not load torch): `config` (SpeechLMConfig), `encoders` (collate_frames, n_audio_tokens),
`model` (SpeechLMForCausalLM, IGNORE: the label the loss skips), `io` (build_speechlm,
save_speechlm, load_speechlm, export_merged), `prosody_vector` (the prosody token's input),
`evidence` (the evidence tokens: the classifiers' probabilities over the label or level
words), `evidence_fit` (fitting their regressions), `pretrain` (encoder warm-up), `train` (SFT), `zeroshot` (the text-only base-LM baseline).
"""
