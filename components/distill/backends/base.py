"""What every teacher backend shares: its counters and the seed it samples with. A module of
its own so the backends need not import the package that builds them by name."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from components.distill.records import TeacherRequest


@dataclass
class TeacherStats:
    """Counters a backend keeps across `generate` calls, for the stage to log."""

    n_requests: int = 0
    n_failed: int = 0
    n_retries: int = 0
    n_truncated: int = 0
    """Replies cut off by the token limit rather than ended by the model."""
    latency_s: float = 0.0
    """Summed per-request time (HTTP: including retries and backoff; local: batch time)."""

    def as_dict(self) -> dict:
        return asdict(self)


def request_seed(seed: int, requests: list[TeacherRequest]) -> int:
    """A 31-bit seed from the run seed and what is asked, so that the same requests sample the
    same way on a rerun while a retry with a hint (different messages) or a new STaR
    iteration (`draw`) draws afresh."""
    payload = json.dumps([seed] + [[r.utt_id, list(r.messages), r.draw] for r in requests],
                         sort_keys=True, default=str)
    return int.from_bytes(hashlib.sha256(payload.encode()).digest()[:4], "big") & 0x7FFFFFFF
