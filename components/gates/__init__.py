"""Data gates: Great Expectations 1.x suites between stages that stop the pipeline on bad data.

Each gate validates a pandas frame, writes `result.json` and Data Docs under its report
directory, and returns a `GateResult`; `raise_if_failed` turns a failure into `GateFailed`.
"""
import os

# Set before great_expectations is first imported, so no context reports usage statistics
# (the contexts built here also disable analytics in their own config).
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
