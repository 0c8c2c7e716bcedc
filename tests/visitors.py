"""Simulated visitors of a site, shared by the sync tests."""

from __future__ import annotations

import numpy as np

from microadjust import Engine

VARIANTS = ["default", "discount", "quiz"]
FAVOURED = "quiz"  # what this site's visitors click


def visitor(seed: int, decisions: int = 30, favoured: str = FAVOURED) -> Engine:
    """A visitor's engine after ``decisions`` on the CTA: the favoured variant is clicked 80% of
    the time, the others 10%."""
    rng = np.random.default_rng(seed)
    engine = Engine(seed=seed)
    for i in range(decisions):
        context = {"device": str(rng.choice(["mobile", "desktop"])), "hour": int(rng.integers(24))}
        d = engine.rank(context, VARIANTS, slot="cta", now=float(i))
        clicked = rng.random() < (0.8 if d.action == favoured else 0.1)
        engine.reward(d.event_id, float(clicked), now=i + 0.5)
    return engine
