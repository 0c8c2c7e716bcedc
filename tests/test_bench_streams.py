"""Fast checks of the benchmark streams (bench/streams.py) and adapter plumbing; no timing."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from conftest import load_bench

streams = load_bench("streams")


def _snapshot(stream, n: int) -> list:
    return [
        (ctx, actions, dict(r.expected), r.draw) for ctx, actions, r in itertools.islice(stream, n)
    ]


@pytest.mark.parametrize(
    "make",
    [
        lambda seed: streams.WebStream(n=300, seed=seed),
        lambda seed: streams.SupervisedStream("iris", passes=2, seed=seed),
    ],
    ids=["web", "iris"],
)
def test_streams_are_deterministic_with_a_seed(make) -> None:
    assert _snapshot(make(3), 200) == _snapshot(make(3), 200)
    assert _snapshot(make(3), 200) != _snapshot(make(4), 200)


def test_web_rewards_are_clicks_with_rates_of_a_few_percent() -> None:
    stream = streams.WebStream(n=2000, seed=0)
    rates = []
    for context, actions, reward in stream:
        assert set(context) == {
            "device",
            "hour",
            "scroll_depth",
            "dwell_s",
            "referrer",
            "returning",
        }
        assert actions == streams.CTAS
        for a in actions:
            assert reward(a) in (0.0, 1.0)
            assert 0.0 < reward.expected[a] < 0.2
        rates.extend(reward.expected.values())
    assert 0.01 < sum(rates) / len(rates) < 0.08


def test_web_preferences_change_at_the_shift() -> None:
    stream = streams.WebStream(n=2000, seed=0, shift_at=1000)
    steps = list(stream)
    for context, _, reward in steps[:1000]:
        assert reward.expected == streams.web_click_rates(context, shifted=False)
    for context, _, reward in steps[1000:]:
        assert reward.expected == streams.web_click_rates(context, shifted=True)
    # for the same visitor, the best CTA differs before and after the shift
    for context, _, _ in steps[:200]:
        before = streams.web_click_rates(context, shifted=False)
        after = streams.web_click_rates(context, shifted=True)
        assert max(before, key=before.get) != max(after, key=after.get)

    # and so does the best CTA on average over visitors
    def best_on_average(part: list) -> str:
        totals = {a: sum(r.expected[a] for _, _, r in part) for a in streams.CTAS}
        return max(totals, key=totals.get)

    assert best_on_average(steps[:1000]) != best_on_average(steps[1000:])


@pytest.mark.parametrize("dataset", ["iris", "wine", "breast_cancer", "digits"])
def test_supervised_reward_is_one_exactly_for_the_true_label(dataset: str) -> None:
    stream = streams.SupervisedStream(dataset, passes=1, seed=0)
    steps = list(stream)
    assert len(steps) == len(stream.labels)
    labels_seen = []
    for context, actions, reward in steps:
        assert all(isinstance(v, float) for v in context.values())
        rewarded = [a for a in actions if reward(a) == 1.0]
        assert len(rewarded) == 1
        assert all(reward(a) == 0.0 for a in actions if a not in rewarded)
        labels_seen.append(actions.index(rewarded[0]))
    # every example appears once per pass: the rewarded labels are the dataset's labels
    assert sorted(labels_seen) == sorted(int(y) for y in stream.labels)


def test_supervised_passes_reshuffle() -> None:
    stream = streams.SupervisedStream("iris", passes=2, seed=0)
    steps = [tuple(c.values()) for c, _, _ in stream]
    assert len(steps) == 300
    assert sorted(steps[:150]) == sorted(steps[150:])
    assert steps[:150] != steps[150:]


def test_adapters_play_a_stream_with_a_stand_in_engine() -> None:
    """Adapter plumbing only: the stand-in is not microadjust and yields no figures."""
    adapters = load_bench("quality_adapters")

    @dataclass
    class Decision:
        action: str
        probability: float
        event_id: int

    class StandIn:
        def __init__(self, policy: str, seed: int) -> None:
            self.rewards: dict[int, float] = {}

        def rank(self, context, actions) -> Decision:
            ids = adapters.action_ids(actions)
            return Decision(ids[0], 1.0, len(self.rewards))

        def reward(self, event_id: int, value: float) -> None:
            self.rewards[event_id] = value

    adapter = adapters.MicroadjustAdapter("auto", seed=0, engine_cls=StandIn)
    for context, actions, reward in streams.WebStream(n=50, seed=0):
        action, prob = adapter.choose(context, actions)
        adapter.learn(reward(action))
    assert len(adapter.engine.rewards) == 50


def test_vw_text_format() -> None:
    adapters = load_bench("quality_adapters")
    lines = adapters.vw_lines(
        {"device": "mobile tab", "scroll": 0.5, "returning": True, "zero": 0.0},
        {"x": {"color": "red"}, "y": {}},
    )
    assert lines == [
        "shared |U device=mobile_tab scroll:0.5 returning:1",
        "|A a=x color=red",
        "|A a=y",
    ]
