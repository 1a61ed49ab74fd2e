"""emoreason: explainable speech emotion recognition, from raw audio to a served model."""
