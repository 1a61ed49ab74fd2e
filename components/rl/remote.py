"""A judge or learned reasoning scorer in its own Ray actor, shared by the training workers.

A judge holds an HTTP client pool and a learned scorer holds a model: built once in an actor
they serve every worker, and their cost shows up in Ray's dashboard as their own, instead of
being rebuilt inside each worker's reward function.
"""
from __future__ import annotations

ACTOR_NAME = "emoreason-reasoning-scorer"


class ScorerActor:
    """The actor's class: the scorer `components.rl.reasoning.build_scorer` makes for the
    `rl` section of `params` (a params mapping)."""

    def __init__(self, params: dict):
        from components.config import params_from_dict
        from components.rl.reasoning import build_scorer

        built = params_from_dict(params)
        self.scorer = build_scorer(built.rl, built.distill.verify, built.base.seed)

    def score(self, items):
        return self.scorer.score(items)


def start_scorer_actor(params: dict, cpus: float):
    """The named actor; it ends with the Ray job that made it."""
    import ray

    return ray.remote(num_cpus=cpus)(ScorerActor).options(name=ACTOR_NAME).remote(params)


class RemoteScorer:
    """The ReasoningScorer interface over the named actor."""

    def __init__(self, name: str = ACTOR_NAME):
        self.name = name

    def score(self, items):
        import ray

        return ray.get(ray.get_actor(self.name).score.remote(items))
