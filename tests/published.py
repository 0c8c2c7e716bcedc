"""Helpers for tests that build a published priors document (protocol v2, section 6)."""


def cell(shown: float, **rewards: float) -> dict[str, dict[str, float]]:
    """One published cell of a slot: every variant shown ``shown`` times, with its reward."""
    return {variant: {"shown": shown, "reward": reward} for variant, reward in rewards.items()}
