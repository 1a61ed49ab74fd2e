"""The register stage: the evaluated model into the MLflow Model Registry, behind a gate."""
