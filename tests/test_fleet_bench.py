"""bench/fleet.py stays runnable and its table means what it says: on a tiny simulated site the
oracle never trails the default variant (common random numbers: the same seen flags and click
draws for every policy), the shift's before / after columns split the same decisions, and the
deployed path uploads without a refusal. A smoke test of the benchmark, not a figure: the
figures are in the README."""

from __future__ import annotations

import re

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
