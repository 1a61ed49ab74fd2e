"""Metrics, rationale quality and the report of the `evaluate` stage."""
