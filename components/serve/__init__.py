"""Serving: batched prediction from a model folder, audio input checks, the MLflow pyfunc."""
