"""One interface over every learner the benchmarks compare.

An adapter is used as ``action, prob = a.choose(context, actions)`` followed by
``a.learn(reward)`` for that same decision. Adapters:

- :class:`MicroadjustAdapter`: ``microadjust.Engine`` with a given policy,
- :class:`VowpalWabbitAdapter`: ``vowpalwabbit.Workspace`` with ``--cb_explore_adf``,
  shared context in namespace ``U``, action features in namespace ``A``, ``-q UA``,
- :class:`MabwiserLinUCBAdapter`: MABWiser's ``LearningPolicy.LinUCB``, updated with
  ``partial_fit`` in chunks of ``batch`` decisions (MABWiser is slow one row at a time).
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

Context = Mapping[str, float | int | str | bool]
Actions = Sequence[str] | Mapping[str, Mapping[str, float | int | str | bool]]


class Adapter(Protocol):
    """What every benchmarked learner looks like."""

    name: str

    def choose(self, context: Context, actions: Actions) -> tuple[str, float]:
        """Pick an action; return it with the probability it was picked with."""
        ...

    def learn(self, reward: float) -> None:
        """Learn from the reward of the last chosen action."""
        ...


def action_ids(actions: Actions) -> list[str]:
    """Action ids in order, for either form of ``actions``."""
    return list(actions.keys()) if isinstance(actions, Mapping) else list(actions)


def engine_revision() -> str:
    """The engine's git commit, marked ``+local changes`` when py/microadjust is modified."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("log", "-1", "--format=%h", "--", "py/microadjust")
        dirty = git("status", "--porcelain", "--", "py/microadjust")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}{' +local changes' if dirty else ''}" if commit else "unknown"


# --- microadjust ----------------------------------------------------------------------------

MICROADJUST_POLICIES: list[str] = ["auto", "epsilon_greedy", "thompson", "linucb", "lin_ts"]


class MicroadjustAdapter:
    """``microadjust.Engine(policy=...)``: rank, then reward by event id."""

    def __init__(self, policy: str, seed: int = 0, engine_cls: Any = None, **params: Any) -> None:
        if engine_cls is None:
            from microadjust import Engine as engine_cls
        self.name = f"microadjust:{policy}"
        self.engine = engine_cls(policy=policy, seed=seed, **params)
        self._event_id: Any = None

    def choose(self, context: Context, actions: Actions) -> tuple[str, float]:
        dec = self.engine.rank(context, actions)
        self._event_id = dec.event_id
        return dec.action, float(dec.probability)

    def learn(self, reward: float) -> None:
        self.engine.reward(self._event_id, reward)


# --- Vowpal Wabbit --------------------------------------------------------------------------

_VW_BAD = str.maketrans({" ": "_", "|": "_", ":": "_", "\t": "_", "\n": "_"})


def vw_features(features: Mapping[str, float | int | str | bool]) -> str:
    """VW text features: numbers as ``name:value``, strings as ``name=value``, bools as 1/0."""
    parts = []
    for key, value in features.items():
        name = str(key).translate(_VW_BAD)
        if isinstance(value, str):
            parts.append(f"{name}={value.translate(_VW_BAD)}")
        elif value:  # zero (and False) features are absent in VW's sparse format
            parts.append(f"{name}:{float(value):g}")
    return " ".join(parts)


def vw_lines(context: Context, actions: Actions) -> list[str]:
    """A multi-line ``--cb_explore_adf`` example, unlabeled: shared line, then one per action."""
    lines = [f"shared |U {vw_features(context)}"]
    for a in action_ids(actions):
        extra = vw_features(actions[a]) if isinstance(actions, Mapping) else ""
        lines.append(f"|A a={str(a).translate(_VW_BAD)} {extra}".rstrip())
    return lines


class VowpalWabbitAdapter:
    """``vowpalwabbit.Workspace("--cb_explore_adf ...")``; samples from VW's pmf itself."""

    def __init__(self, explore: str, seed: int = 0, name: str | None = None) -> None:
        from vowpalwabbit import Workspace

        self.args = f"--cb_explore_adf {explore} -q UA --quiet --random_seed {seed}"
        self.name = name or f"vw:{explore.strip('-')}"
        self.vw = Workspace(self.args)
        self.rng = random.Random(seed)
        self._lines: list[str] = []
        self._index = 0
        self._prob = 1.0

    def choose(self, context: Context, actions: Actions) -> tuple[str, float]:
        self._lines = vw_lines(context, actions)
        pmf = self.vw.predict(self._lines)
        ids = action_ids(actions)
        self._index = self.rng.choices(range(len(ids)), weights=pmf)[0]
        self._prob = float(pmf[self._index])
        return ids[self._index], self._prob

    def learn(self, reward: float) -> None:
        lines = list(self._lines)
        line = lines[self._index + 1]
        cost = -reward if reward else 0.0  # VW minimizes cost; avoid printing "-0"
        lines[self._index + 1] = f"0:{cost:g}:{self._prob:.6g} {line}"
        self.vw.learn(lines)

    def close(self) -> None:
        """Release VW's native resources."""
        self.vw.finish()


# --- MABWiser -------------------------------------------------------------------------------


class Vectorizer:
    """Mapping context -> fixed-width numeric row: numbers as is, strings one-hot.

    The layout is fixed by the first context seen; each string feature gets ``slots``
    one-hot slots filled in first-seen order (later new values share the last slot).
    """

    def __init__(self, slots: int = 8) -> None:
        self.slots = slots
        self.layout: list[tuple[str, bool]] | None = None  # (name, is_categorical)
        self.vocab: dict[str, dict[str, int]] = {}

    @property
    def width(self) -> int:
        assert self.layout is not None
        return sum(self.slots if cat else 1 for _, cat in self.layout)

    def __call__(self, context: Context) -> list[float]:
        if self.layout is None:
            self.layout = [(k, isinstance(v, str)) for k, v in context.items()]
        row: list[float] = []
        for name, categorical in self.layout:
            value = context.get(name, 0.0)
            if categorical:
                vocab = self.vocab.setdefault(name, {})
                index = vocab.setdefault(str(value), min(len(vocab), self.slots - 1))
                one_hot = [0.0] * self.slots
                one_hot[index] = 1.0
                row.extend(one_hot)
            else:
                row.append(float(value))
        return row


class MabwiserLinUCBAdapter:
    """``MAB(arms, LearningPolicy.LinUCB(alpha))`` with ``partial_fit`` every ``batch`` rows.

    Before the first fit it picks uniformly at random; LinUCB itself is deterministic, so the
    reported probability is then 1.
    """

    def __init__(self, alpha: float = 1.0, batch: int = 1, seed: int = 0) -> None:
        self.alpha = alpha
        self.batch = batch
        self.seed = seed
        self.name = "mabwiser:linucb"
        self.rng = random.Random(seed)
        self.vectorize = Vectorizer()
        self.mab: Any = None
        self.fitted = False
        self._row: list[float] = []
        self._action = ""
        self._pending: tuple[list[str], list[float], list[list[float]]] = ([], [], [])

    def choose(self, context: Context, actions: Actions) -> tuple[str, float]:
        ids = action_ids(actions)
        if self.mab is None:
            from mabwiser.mab import MAB, LearningPolicy

            self.mab = MAB(ids, LearningPolicy.LinUCB(alpha=self.alpha), seed=self.seed)
        self._row = self.vectorize(context)
        if not self.fitted:
            self._action = self.rng.choice(ids)
            return self._action, 1.0 / len(ids)
        self._action = str(self.mab.predict([self._row]))
        return self._action, 1.0

    def learn(self, reward: float) -> None:
        decisions, rewards, rows = self._pending
        decisions.append(self._action)
        rewards.append(reward)
        rows.append(self._row)
        if len(decisions) >= self.batch:
            if self.fitted:
                self.mab.partial_fit(decisions, rewards, rows)
            else:
                self.mab.fit(decisions, rewards, rows)
                self.fitted = True
            self._pending = ([], [], [])


# --- registry -------------------------------------------------------------------------------

AdapterFactory = Callable[[int], Adapter]


def competitor_factories(mabwiser_batch: int = 1) -> dict[str, AdapterFactory]:
    """Factories (seed -> adapter) for Vowpal Wabbit and MABWiser, keyed by column name."""
    return {
        "vw:epsilon": lambda seed: VowpalWabbitAdapter("--epsilon 0.05", seed, "vw:epsilon"),
        "vw:squarecb": lambda seed: VowpalWabbitAdapter("--squarecb", seed, "vw:squarecb"),
        "mabwiser:linucb": lambda seed: MabwiserLinUCBAdapter(
            alpha=1.0, batch=mabwiser_batch, seed=seed
        ),
    }


def microadjust_factories() -> dict[str, AdapterFactory]:
    """Factories (seed -> adapter) for every microadjust policy, keyed by column name."""

    def make(policy: str) -> AdapterFactory:
        return lambda seed: MicroadjustAdapter(policy, seed)

    return {f"ma:{p}": make(p) for p in MICROADJUST_POLICIES}
