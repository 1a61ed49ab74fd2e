"""Prefect flows that orchestrate the DVC pipeline."""
