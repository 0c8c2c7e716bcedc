"""bench/fleet.py stays runnable and its table means what it says: on a tiny simulated site the
oracle never trails the default variant (common random numbers: the same seen flags and click
draws for every policy), the shift's before / after columns split the same decisions, and the
deployed path uploads without a refusal. A smoke test of the benchmark, not a figure: the
figures are in the README."""

from __future__ import annotations

import re

import pytest
from conftest import load_bench

ROW = re.compile(r"^\| (\S+) \| ([\d.]+)% \|.*\| ([\d.]+)% / ([\d.]+)% \| \d+ \| (.*) \|$")


def test_a_tiny_shift_prints_every_policy_with_its_halves(capsys):
    fleet = load_bench("fleet")
    fleet.main(["--sizes", "150", "--shapes", "shift", "--per-day", "300",
                "--policies", "default,oracle,deployed:aggregate"])  # fmt: skip
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        if match := ROW.match(line):
            label, ctr, before, after, note = match.groups()
            rows[label] = (float(ctr), float(before), float(after), note)
    assert set(rows) == {"default", "oracle", "deployed:aggregate"}
    for ctr, before, after, _ in rows.values():  # the whole lies between its halves
        assert min(before, after) - 0.01 <= ctr <= max(before, after) + 0.01
        assert before > 0 and after > 0  # each half has its own clicks
    assert rows["oracle"][0] >= rows["default"][0]
    assert rows["oracle"][1] >= rows["default"][1] and rows["oracle"][2] >= rows["default"][2]
    assert rows["deployed:aggregate"][3] == ""  # no upload refused


SHARE = re.compile(r"^\| (\S+) \| ([\d.]+)% \| [^|]+ \| (-?[\d.]+) \|")
POOLED = re.compile(r"^\| (\S+) \| ([\d.]+)% \| (-?[\d.]+) \| ([-\d. /]+) \|$")


def test_several_seeds_print_each_run_then_the_shares_pooled_over_them(capsys):
    """Pooled share = the runs' summed lifts over the default variant / the central engine's
    summed lifts, not the mean of the shares (seeds 0 and 3: 2.6 against -5.3); each seed's own
    share is listed too, and matches its own table."""
    fleet = load_bench("fleet")
    fleet.main(["--sizes", "150", "--shapes", "flat", "--per-day", "300", "--seed", "0,3",
                "--policies", "default,central,oracle"])  # fmt: skip
    out = capsys.readouterr().out
    runs, pooled = out.split("pooled over seeds 0, 3")
    assert runs.count("## flat, 150 visitors, seed ") == 2
    ctr = {}  # (seed index, policy) -> CTR, from each run's own table
    for k, table in enumerate(runs.split("## flat, 150 visitors, seed ")[1:]):
        for line in table.splitlines():
            if match := SHARE.match(line):
                ctr[k, match.group(1)] = float(match.group(2)) / 100
    rows = {m.group(1): m.groups()[1:] for line in pooled.splitlines() if (m := POOLED.match(line))}
    assert set(rows) == {"default", "central", "oracle"}
    mean, share, per_seed = rows["oracle"]
    lifts = [ctr[k, "oracle"] - ctr[k, "default"] for k in (0, 1)]
    gains = [ctr[k, "central"] - ctr[k, "default"] for k in (0, 1)]
    assert float(share) == pytest.approx(sum(lifts) / sum(gains), rel=0.05)
    assert [float(x) for x in per_seed.split(" / ")] == pytest.approx(
        [lift / gain for lift, gain in zip(lifts, gains, strict=True)], rel=0.05
    )
    assert float(mean) / 100 == pytest.approx((ctr[0, "oracle"] + ctr[1, "oracle"]) / 2, abs=1e-4)
    assert rows["central"][1] == "1.00"


def test_a_seed_that_is_not_a_number_is_refused_with_what_was_expected(capsys):
    fleet = load_bench("fleet")
    with pytest.raises(SystemExit):
        fleet.main(["--seed", "0,one"])
    assert "comma-separated seeds such as 0,1,3,4, got '0,one'" in capsys.readouterr().err
