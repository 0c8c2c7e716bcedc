"""Poisoning by one attacker within the bounds (issue: forged-within-bounds): with 5% of all
uploads forged from one IP, each the strongest forgery the bounds allow (maximum reward, no
exposure, on the honestly worst variant), the published best variant of every slot and cell
stays the honest one; without source-bucket capping the same attack takes over. The simulation
is bench/poison.py (real app, real storage, one address per honest visitor)."""

from __future__ import annotations

from conftest import load_bench


def test_forged_within_bounds_from_one_ip_leaves_every_best_variant_honest():
    outcome = load_bench("poison").simulate(0.05, visitors=2000, concentrated=True, seed=3)
    assert outcome.honest == outcome.total == 6


def test_the_same_forgery_takes_over_without_source_capping():
    """The attack is real: it is the capping that stops it."""
    outcome = load_bench("poison").simulate(0.05, visitors=2000, bucket_cap=float("inf"), seed=3)
    assert outcome.honest <= outcome.total // 2
