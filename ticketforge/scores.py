"""Scores stored with a round: each evaluator's headline score and how it was made."""

from __future__ import annotations

from typing import Any

from .errors import UsageError


def headline(scores: dict[str, Any]) -> tuple[str, float]:
    """The evaluator's main score: the first float in its dict (evaluators put it first)."""
    for key, value in scores.items():
        if isinstance(value, float):
            return key, value
    raise UsageError("the evaluator returned no score")


def stored_scores(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Evaluator name -> its headline score and how it was made, from a round's stored metrics."""
    out = {}
    for name, value in metrics.items():
        if isinstance(value, dict):
            try:
                key, score = headline(value)
            except UsageError:
                continue
            out[name] = {"key": key, "value": score, **{k: value.get(k) for k in
                         ("n_samples", "sampler", "steps", "featurizer_sha256", "seed")}}
    return out
