"""The promotion gate: does a newly registered version take the `champion` alias?

It does when there is no champion yet, or when it beats the champion on the gate metric
while its rationale grounding did not drop by more than the tolerance: a model that labels
better by explaining worse is not promoted. Numbers are only compared when both versions were
evaluated the same way (corpus, split, label set); otherwise the champion stays and the
reason says why, since a metric on another corpus says nothing about this one.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

TAG = "emoreason."
GATE_METRIC, GATE_VALUE, GROUNDING = f"{TAG}gate_metric", f"{TAG}gate_value", f"{TAG}grounding"
EVALUATION = f"{TAG}evaluation"
"""Tag holding how the version was evaluated (corpus, split, labels) as JSON."""
METRIC_PREFIX = f"{TAG}metric."
"""One tag per scalar metric of the version's evaluation, e.g. `emoreason.metric.ua`."""


@dataclass
class Scores:
    """What the gate compares of one model version."""

    gate_value: float | None
    grounding: float | None
    evaluation: dict

    @classmethod
    def from_tags(cls, tags: dict[str, str], gate_metric: str) -> Scores:
        """A registered version's scores, as `version_tags` stored them; the gate value is
        the one of `gate_metric` (also when the version was gated on another metric)."""
        value = tags.get(GATE_VALUE) if tags.get(GATE_METRIC) == gate_metric else None
        value = value if value is not None else tags.get(METRIC_PREFIX + gate_metric)
        try:
            evaluation = json.loads(tags.get(EVALUATION, "{}"))
        except json.JSONDecodeError:
            evaluation = {}
        return cls(_number(value), _number(tags.get(GROUNDING)), evaluation)


@dataclass
class Decision:
    promoted: bool
    reason: str

    @property
    def name(self) -> str:
        return "promoted" if self.promoted else "kept"


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def version_tags(scores: Scores, gate_metric: str, metrics: dict[str, float | None]) -> dict:
    """Tags that let a later version be compared with this one."""
    tags = {GATE_METRIC: gate_metric, GATE_VALUE: as_tag(scores.gate_value),
            GROUNDING: as_tag(scores.grounding),
            EVALUATION: json.dumps(scores.evaluation, sort_keys=True)}
    tags.update({METRIC_PREFIX + k: as_tag(v) for k, v in metrics.items()})
    return tags


def comparison_tags(new: Scores, champion: Scores | None, champion_version: str | None) -> dict:
    """The numbers the gate compared, as tags (for the version and the stage's run)."""
    return {f"{TAG}new_gate_value": as_tag(new.gate_value),
            f"{TAG}new_grounding": as_tag(new.grounding),
            f"{TAG}champion_version": champion_version or "none",
            f"{TAG}champion_gate_value": as_tag(champion.gate_value if champion else None),
            f"{TAG}champion_grounding": as_tag(champion.grounding if champion else None)}


def as_tag(value: float | None) -> str:
    """A number as tag text that reads back exactly; `none` when not measured."""
    return "none" if value is None else repr(float(value))


def decide(new: Scores, champion: Scores | None, champion_version: str | None,
           gate_metric: str, grounding_tolerance: float) -> Decision:
    """Promote `new` over the current champion (None: there is none)?"""
    if champion is None:
        return Decision(True, "no champion yet: the first version becomes champion")
    who = f"champion v{champion_version}"
    if new.gate_value is None:
        return Decision(False, f"this version has no {gate_metric}")
    if champion.evaluation != new.evaluation:
        return Decision(False, f"not comparable: {who} was evaluated on "
                               f"{_describe(champion.evaluation)}, this version on "
                               f"{_describe(new.evaluation)}; move the alias by hand if meant")
    if champion.gate_value is None:
        return Decision(False, f"{who} has no recorded {gate_metric}; move the alias by hand "
                               "if meant")
    if new.gate_value <= champion.gate_value:
        return Decision(False, f"{gate_metric} {new.gate_value:.4f} does not beat {who}'s "
                               f"{champion.gate_value:.4f}")
    beats = f"{gate_metric} {new.gate_value:.4f} beats {who}'s {champion.gate_value:.4f}"
    if champion.grounding is None:
        return Decision(True, f"{beats}; {who} has no grounding to compare")
    if new.grounding is None:
        return Decision(False, f"{beats}, but this version's rationale grounding was not "
                               f"measured ({who}'s: {champion.grounding:.4f})")
    drop = champion.grounding - new.grounding
    if drop > grounding_tolerance + 1e-12:
        return Decision(False, f"{beats}, but rationale grounding dropped by {drop:.4f} "
                               f"({champion.grounding:.4f} -> {new.grounding:.4f}), more than "
                               f"the tolerance {grounding_tolerance:g}")
    return Decision(True, f"{beats}; grounding {new.grounding:.4f} vs "
                          f"{champion.grounding:.4f} (tolerance {grounding_tolerance:g})")


def _describe(evaluation: dict) -> str:
    if not evaluation:
        return "an unrecorded evaluation"
    return ", ".join(f"{k} {v}" for k, v in sorted(evaluation.items()))
