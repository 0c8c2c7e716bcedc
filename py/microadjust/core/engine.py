"""The decision engine: ``Engine.rank`` chooses, ``Engine.reward`` learns.

A ``rank`` call validates its input (raising an error from :mod:`microadjust.core.errors` and
changing nothing on bad input), hashes the context (and each action's features) into one vector
per action (:mod:`microadjust.core.features`), asks the slot's per-action ridge models for a
mean and an uncertainty, turns them into a probability vector with the policy
(:mod:`microadjust.core.policies`), applies the guardrails (:mod:`microadjust.core.guardrails`)
and draws the action from the result with the engine's single seeded generator
(:mod:`microadjust.core.sampling`): ``Decision.probability`` is the exact probability of that
draw. ``rank_cascade`` ranks a list of items by one such decision per position.
``rank_ahead`` (and ``rank_cascade_ahead``) draw the same way for a later page view but keep
nothing pending; ``adopt`` makes such a decision pending once it is shown, with the propensity
it was drawn with.

The decision waits (bounded: ``max_pending``) for its reward for ``attribution_window_s``
seconds; ``reward`` updates the chosen action's model (rank-1), the slot's drift detector
(:mod:`microadjust.core.drift`) and the bounded log used for off-policy evaluation
(:mod:`microadjust.core.evaluation`); the records are typed (:mod:`microadjust.core.records`).
Each rewarded decision is one reward; a second reward for the same event raises
:class:`UnknownEvent`. With ``default_reward`` set, decisions that expire unrewarded are learned
with that reward. ``state()`` / ``from_state()`` save and restore everything bit-exact, with
errors that name the wrong key path (:mod:`microadjust.core.state`).

>>> eng = Engine(seed=0)
>>> dec = eng.rank({"device": "mobile", "scroll_depth": 0.4}, ["eco", "standard", "premium"],
...                now=0.0)
>>> dec.action in {"eco", "standard", "premium"}, 0 < dec.probability <= 1
(True, True)
>>> eng.reward(dec.event_id, 1.0, now=1.0)
>>> Engine.from_state(eng.state()).state() == eng.state()
True
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from .drift import PageHinkley
from .errors import (
    ExpiredEvent,
    InvalidParameter,
    InvalidPrior,
    InvalidReward,
    InvalidSlot,
    InvalidState,
    MicroadjustError,
    UnknownEvent,
)
from .features import Featurizer
from .guardrails import Guardrails, beat_probability
from .models import ArmModels
from .params import DEFAULTS, as_float, check_params, is_finite_number
from .policies import AUTO_PARAMS, AUTO_POLICY, POLICIES, Policy, Scores
from .priors import PRIOR_LEVELS, make_schema, parse_stats, prior_scale
from .reasons import explain as reason_of
from .records import AheadDecision, Decision, LogRecord, PendingDecision, Ranking
from .sampling import draw
from .slots import Prior, PriorStats, SlotState
from .state import StateReader

if TYPE_CHECKING:  # imported where used: deciding never needs it (nor statistics, fractions)
    from . import evaluation
    from .why import Why  # only with explain=True: the page's debug panel

__all__ = [
    "Engine",
    "Decision",
    "Ranking",
    "AheadDecision",
    "DEFAULTS",
    "AUTO_POLICY",
    "AUTO_PARAMS",
]

STATE_FORMAT = "microadjust.core.engine"
#: Version 2 added ``event_id`` to log records; version 1 states are migrated on load.
STATE_VERSION = 2


def _migrate_v1(state: dict[str, Any]) -> dict[str, Any]:
    """Version 1 logged records without their event id: mark them as unknown (``None``)."""
    log = state.get("log")
    if isinstance(log, list):
        state["log"] = [
            {"event_id": None, **r} if isinstance(r, Mapping) and "event_id" not in r else r
            for r in log
        ]
    return {**state, "version": 2}


#: Migrations from an older state version to the next one.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _migrate_v1}


class Engine:
    """On-device contextual bandit with guardrails, priors, drift handling and logging.

    ``policy`` is one of ``"auto"`` (``"linucb"`` with :data:`AUTO_PARAMS` as defaults),
    ``"epsilon_greedy"``, ``"thompson"`` (Beta-Bernoulli, context-free), ``"linucb"`` and
    ``"lin_ts"`` (:data:`~microadjust.core.policies.POLICIES`). ``seed`` seeds the single
    random generator (``None``: fresh entropy). Every other parameter is listed, with its
    default, in :data:`DEFAULTS`.
    """

    def __init__(self, policy: str = "auto", seed: int | None = 0, **params: Any):
        if policy == "auto":
            params = {**AUTO_PARAMS, **params}
        self.params = check_params(policy, params)
        if seed is not None and (type(seed) is not int or seed < 0):
            raise InvalidParameter(f"seed must be None or an int >= 0, got {seed!r}")
        self.policy = policy
        self.seed = seed
        p = self.params
        self._policy: Policy = POLICIES[self.resolved_policy].from_params(p)
        self._uniform_share = self._policy.uniform_share(p["explore_floor"])
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._features = Featurizer(
            dim=p["dim"],
            max_features=p["max_features"],
            interactions=p["interactions"],
            scaling=p["scaling"],
        )
        self._guard = Guardrails.from_params(p)
        self._slots: dict[str, SlotState] = {}
        self._pending: OrderedDict[str, PendingDecision] = OrderedDict()
        self._expired: deque[str] = deque(maxlen=256)
        self._log: deque[LogRecord] = deque(maxlen=p["log_size"])
        self._counter = 0
        self._prefix = format(int(self._rng.integers(0, 2**32)), "08x")

    # -- public API -------------------------------------------------------------------

    @property
    def resolved_policy(self) -> str:
        """The concrete policy used (``"auto"`` resolved)."""
        return AUTO_POLICY if self.policy == "auto" else self.policy

    def rank(
        self,
        context: Mapping[str, Any],
        actions: Sequence[str] | Mapping[str, Mapping[str, Any]],
        *,
        slot: str = "default",
        now: float | None = None,
        explain: bool = False,
    ) -> Decision:
        """Choose one of ``actions`` for ``slot`` given ``context``; remember it for reward.

        The default action is the one named ``"default"`` if present, else the first.
        With ``explain``, ``Decision.why`` says why (:mod:`microadjust.core.why`; it costs a
        little, so only a debug view asks).
        Raises :class:`InvalidContext`, :class:`InvalidActions`, :class:`InvalidSlot` or
        :class:`InvalidParameter` (for ``now``) and then changes nothing.
        """
        choice = self._choose(context, actions, slot, now, ahead=False, explain=explain)
        self._pend(choice)
        return choice.decision

    def rank_ahead(
        self,
        context: Mapping[str, Any],
        actions: Sequence[str] | Mapping[str, Mapping[str, Any]],
        *,
        slot: str = "default",
        now: float | None = None,
    ) -> AheadDecision:
        """Decide now, for a later page view in ``context``, as :meth:`rank` would (model,
        guardrails, holdout, exact propensity, a new event id), but keep nothing pending.

        The caller keeps the result; :meth:`adopt` makes it pending once it is shown. One that
        is never adopted teaches nothing. The online feature scaling does not learn from
        ``context`` (it is a guess). Raises what :meth:`rank` raises, and then changes nothing.

        >>> eng = Engine(seed=0)
        >>> ahead = eng.rank_ahead({"visits": 2}, ["a", "b"], slot="cta", now=0.0)
        >>> [d.event_id for d in eng.adopt([ahead], now=60.0)] == [ahead.decision.event_id]
        True
        >>> eng.reward(ahead.decision.event_id, 1.0, now=61.0)
        >>> eng.log()[0]["propensity"] == ahead.decision.probability
        True
        """
        choice = self._choose(context, actions, slot, now, ahead=True)
        pending = choice.pending  # with ahead, its context and actions are always kept
        x = tuple(pending.x.tolist())
        return AheadDecision(
            choice.decision, x, pending.context or {}, pending.actions or [], pending.t
        )

    def rank_cascade_ahead(
        self,
        context: Mapping[str, Any],
        items: Sequence[str] | Mapping[str, Mapping[str, Any]],
        *,
        slot: str = "default",
        now: float | None = None,
    ) -> list[AheadDecision]:
        """:meth:`rank_cascade` for a later page view: one :meth:`rank_ahead` per position,
        top first (the last item follows them)."""
        return self._cascade(self.rank_ahead, context, items, slot, now)[0]

    def adopt(
        self, decisions: Sequence[AheadDecision], *, now: float | None = None
    ) -> list[Decision]:
        """The decisions made ahead (by :meth:`rank_ahead` of this engine) are shown now: each
        waits for its reward from ``now`` on, as one of :meth:`rank`'s, with its logged
        propensity, and counts for the guardrails.

        Raises :class:`UnknownEvent` (not issued by this engine, or already adopted),
        :class:`InvalidState` (a malformed record) or :class:`InvalidParameter` (for ``now``),
        and then changes nothing.
        """
        now = self._now(now)
        dim = self.params["dim"]
        choices: list[_Choice] = []
        for ahead in decisions:
            if not isinstance(ahead, AheadDecision):
                raise InvalidState(f"expected an AheadDecision, got {type(ahead).__name__}")
            d = ahead.decision
            prefix, _, number = d.event_id.partition("-")
            issued = prefix == self._prefix and number.isdigit() and int(number) < self._counter
            again = d.event_id in self._pending or any(c.decision == d for c in choices)
            if not issued or again:
                raise UnknownEvent(
                    f"event {d.event_id!r} was not made ahead by this engine, or is adopted"
                )
            names = list(ahead.actions)
            if d.action not in names or not 0 < d.probability <= 1 or len(ahead.x) != dim:
                raise InvalidState(
                    f"decision {d.event_id!r} made ahead is malformed: action {d.action!r} among"
                    f" {names}, probability {d.probability!r} in (0, 1], {len(ahead.x)} features"
                    f" (expected {dim})"
                )
            logged = self.params["log_size"] > 0
            pending = PendingDecision(
                d.event_id,
                d.slot,
                d.action,
                np.array(ahead.x, dtype=np.float64),
                now,
                d.probability,
                d.holdout,
                dict(ahead.context) if logged else None,
                ahead.actions if logged else None,
            )
            default = "default" if "default" in names else names[0]
            forced = d.reason if d.reason.startswith("cooldown") else ""
            choices.append(_Choice(d, pending, d.action == default, forced))
        # ---- validated ----
        self._purge(now)
        self._guard.roll_session(now)
        for choice in choices:
            self._pend(choice)
        return [choice.decision for choice in choices]

    def rank_cascade(
        self,
        context: Mapping[str, Any],
        items: Sequence[str] | Mapping[str, Mapping[str, Any]],
        *,
        slot: str = "default",
        now: float | None = None,
        explain: bool = False,
    ) -> Ranking:
        """Rank ``items`` top first: each position is a :meth:`rank` among the items left.

        Every position but the last is a decision of its own (with its own event id, to
        reward when that position converts); one item gives an empty ``decisions`` list.
        Raises what :meth:`rank` raises, and then changes nothing.

        >>> eng = Engine(seed=0)
        >>> ranking = eng.rank_cascade({"device": "mobile"}, ["a", "b", "c"], now=0.0)
        >>> sorted(ranking.order), len(ranking.decisions)
        (['a', 'b', 'c'], 2)
        >>> ranking.order[:2] == [d.action for d in ranking.decisions]
        True
        """
        rank = partial(self.rank, explain=explain)
        decisions, left = self._cascade(rank, context, items, slot, now)
        return Ranking([d.action for d in decisions] + left, decisions)

    def reward(self, event_id: str, value: float, *, now: float | None = None) -> None:
        """Learn ``value`` as the reward of decision ``event_id`` (one reward per decision).

        Raises :class:`InvalidReward` (not a finite number), :class:`UnknownEvent` (never
        issued, or already rewarded) or :class:`ExpiredEvent` (after the attribution window,
        or evicted because too many decisions were pending) and then changes nothing.
        """
        number = as_float(value)
        if number is None or not math.isfinite(number):
            raise InvalidReward(f"reward must be a finite number, got {value!r}")
        value = number
        if type(event_id) is not str:
            raise UnknownEvent(f"event id must be a string, got {type(event_id).__name__}")
        now = self._now(now)
        rec = self._pending.get(event_id)
        if rec is None:
            if event_id in self._expired:
                raise ExpiredEvent(
                    f"event {event_id!r} expired (attribution window or pending limit) "
                    "before its reward arrived"
                )
            raise UnknownEvent(f"unknown event id {event_id!r} (never issued or already rewarded)")
        if now > rec.t + self.params["attribution_window_s"]:  # the window's end, inclusive
            raise ExpiredEvent(
                f"event {event_id!r} is {now - rec.t:.0f} s old, past the attribution "
                f"window of {self.params['attribution_window_s']:.0f} s"
            )
        # ---- validated ----
        del self._pending[event_id]
        self._learn(rec, value)
        self._purge(now)

    # -- state ------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """JSON-serializable snapshot; :meth:`from_state` restores it exactly (RNG too)."""
        return self.to_state()

    def to_state(self) -> dict[str, Any]:
        """The same as :meth:`state` (the core's common name for it)."""
        bg = self._rng.bit_generator.state
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "policy": self.policy,
            "seed": self.seed,
            "params": dict(self.params),
            "rng": {
                "bit_generator": bg["bit_generator"],
                "state": format(bg["state"]["state"], "x"),
                "inc": format(bg["state"]["inc"], "x"),
                "has_uint32": int(bg["has_uint32"]),
                "uinteger": int(bg["uinteger"]),
            },
            "prefix": self._prefix,
            "counter": self._counter,
            "scale": {k: list(v) for k, v in self._features.scale.items()},
            "guard": self._guard.to_state(),
            "slots": {name: st.to_state() for name, st in self._slots.items()},
            "pending": [[eid, rec.to_state()] for eid, rec in self._pending.items()],
            "expired": list(self._expired),
            "log": [r.to_state() for r in self._log],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Engine:
        """Rebuild an engine from :meth:`state`, of this or an older version.

        Raises :class:`InvalidState` naming the key path that is wrong, e.g.
        ``engine.slots['cta'].noise: expected a list of 3 floats, got None``.
        """
        root = StateReader(state, "engine")
        if not isinstance(state, Mapping):
            raise root.error("a mapping (a saved Engine.state())")
        if state.get("format") != STATE_FORMAT:
            raise root["format"].error(repr(STATE_FORMAT))
        version = state.get("version")
        if type(version) is not int or not (version in MIGRATIONS or version == STATE_VERSION):
            raise root["version"].error(f"a state version from 1 to {STATE_VERSION}")
        while version != STATE_VERSION:
            state = MIGRATIONS[version](dict(state))
            version = state["version"]
        try:
            return cls._read_state(StateReader(state, "engine"))
        except MicroadjustError:
            raise
        except (TypeError, ValueError, OverflowError) as exc:  # a value numpy refused
            raise InvalidState(f"engine: {type(exc).__name__}: {exc}") from exc

    @classmethod
    def _read_state(cls, root: StateReader) -> Engine:
        params, seed = root["params"], root["seed"]
        try:
            eng = cls(root["policy"].str(), None if seed.value is None else seed.int(),
                      **params.mapping())  # fmt: skip
        except InvalidParameter as exc:
            raise InvalidState(f"{params.path}: {exc}") from exc
        p = eng.params
        rng = root["rng"]
        rng["bit_generator"].choice(("PCG64",))
        eng._rng.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": _hex(rng["state"]), "inc": _hex(rng["inc"])},
            "has_uint32": rng["has_uint32"].int(),
            "uinteger": rng["uinteger"].int(),
        }
        eng._prefix = root["prefix"].str()
        eng._counter = root["counter"].int()
        eng._features.scale = {k: v.floats(2).tolist() for k, v in root["scale"].items()}
        eng._guard = Guardrails.from_state(root["guard"], p)
        eng._slots = {name: SlotState.from_state(st, p) for name, st in root["slots"].items()}
        for pair in root["pending"].list():
            eid, rec = pair.list(2)
            eng._pending[eid.str()] = PendingDecision.from_state(eid.str(), rec, p["dim"])
        eng._expired.extend(e.str() for e in root["expired"].list())
        eng._log.extend(LogRecord.from_state(r) for r in root["log"].list())
        return eng

    # -- priors -----------------------------------------------------------------------

    def schema(self) -> dict[str, Any]:
        """The ``schema`` of this engine's statistics (see :mod:`microadjust.core.priors`)."""
        return make_schema(self._features.schema())

    def stats(self, slot: str = "default") -> dict[str, Any]:
        """Additive sufficient statistics of this visitor's data in ``slot``."""
        self._check_slot(slot, creating=False)
        st = self._slots.get(slot)
        actions: dict[str, Any] = {}
        if st is not None:
            m = st.models
            for k, a in enumerate(m.actions):
                s = m.scalars_of(k)
                actions[a] = {
                    "n": s.n,
                    "reward_sum": s.reward_sum,
                    "reward_sq_sum": s.reward_sq_sum,
                    "successes": s.successes,
                    "failures": s.failures,
                    "xtx": m.gram(k).tolist(),
                    "xty": m.g[k].tolist(),
                }
        return {"schema": self.schema(), "slot": slot, "actions": actions}

    def set_prior(
        self,
        slot: str,
        stats: Mapping[str, Any],
        weight: float = 1.0,
        *,
        level: str = "site",
    ) -> None:
        """Install ``stats`` (e.g. merged by the sync server) as the ``level`` prior of ``slot``.

        ``level`` is ``"site"`` or ``"segment"``; installing a level again replaces it, and
        ``weight=0`` removes it. Raises :class:`InvalidPrior` (and changes nothing) on a
        malformed prior or a different feature space.
        """
        self._check_slot(slot, creating=True)
        if level not in PRIOR_LEVELS:
            raise InvalidPrior(f"prior level must be one of {PRIOR_LEVELS}, got {level!r}")
        if not is_finite_number(weight) or weight < 0:
            raise InvalidPrior(f"prior weight must be a finite number >= 0, got {weight!r}")
        parsed = parse_stats(stats, self.schema())
        strength = self.params["prior_strength"]
        scaled = {}
        for a, (xtx, xty, sc) in parsed.items():
            c = prior_scale(sc["n"], float(weight), strength)
            scaled[a] = PriorStats(c * xtx, c * xty, c * sc["successes"], c * sc["failures"])
        st = self._slot(slot)
        if weight == 0:
            st.priors.pop(level, None)
        else:
            st.priors[level] = Prior(float(weight), scaled)
        for k in range(len(st.models.actions)):
            st.install_priors(k)

    # -- evaluation ---------------------------------------------------------------------

    def log(self, slot: str | None = None) -> list[dict[str, Any]]:
        """The bounded log of rewarded decisions (oldest first), optionally for one slot.

        Each record is :meth:`LogRecord.to_state`: ``event_id``, ``slot``, ``action``, ``t``,
        ``propensity``, ``holdout``, ``context``, ``actions`` and ``reward``.
        """
        return [r.to_state() for r in self._log if slot is None or r.slot == slot]

    def policy_probabilities(
        self,
        context: Mapping[str, Any],
        actions: Sequence[str] | Mapping[str, Mapping[str, Any]],
        *,
        slot: str = "default",
    ) -> dict[str, float]:
        """The current policy's choice probabilities (no guardrails; changes nothing)."""
        self._check_slot(slot, creating=False)
        ctx = self._features.parse(context, "context")
        names, afeats = self._features.parse_actions(actions, self.params["max_actions"])
        X = self._features.transform(ctx, afeats, len(names))
        st = self._slots.get(slot)
        if st is None:
            return {a: 1.0 / len(names) for a in names}
        m = st.models
        if not all(a in m.index for a in names):  # an unseen action: use a throwaway copy
            tmp = SlotState(ArmModels(m.dim, m.l2), st.drift)
            tmp.noise = st.noise
            for a in names:
                k = tmp.models.add_action(a)
                if a in m.index:
                    tmp.models.copy_action(m, m.index[a], k)
            st = tmp
        idx = [st.models.index[a] for a in names]
        rng = np.random.Generator(np.random.PCG64(12345))
        probs, _ = self._policy_probs(st, idx, X, rng)
        return {a: float(p) for a, p in zip(names, probs, strict=True)}

    def evaluate(
        self,
        policy: evaluation.TargetPolicy | None = None,
        *,
        slot: str | None = None,
        method: str = "doubly_robust",
        confidence: float = 0.95,
    ) -> evaluation.Estimate:
        """Off-policy estimate of ``policy`` (default: this engine's current policy)."""
        from . import evaluation

        estimators: dict[str, Callable[..., evaluation.Estimate]] = {
            "ips": evaluation.ips,
            "snips": evaluation.snips,
            "doubly_robust": evaluation.doubly_robust,
        }
        if method not in estimators:
            raise InvalidParameter(f"method must be one of {sorted(estimators)}, got {method!r}")
        records = self.log(slot)
        if policy is None:  # the current policy, each record in its own slot
            probs = iter(
                [
                    self.policy_probabilities(r["context"], r["actions"], slot=r["slot"])
                    for r in records
                ]
            )
            return estimators[method](records, lambda c, a: next(probs), confidence=confidence)
        return estimators[method](records, policy, confidence=confidence)

    def lift(self, slot: str | None = None, *, confidence: float = 0.95) -> evaluation.LiftEstimate:
        """Lift of the treated decisions over the holdout, from the log."""
        from . import evaluation

        return evaluation.lift(self.log(slot), confidence=confidence)

    def drift_resets(self, slot: str = "default") -> int:
        """How many times drift was detected (and the visitor model reset) in ``slot``."""
        st = self._slots.get(slot)
        return 0 if st is None else st.drift_resets

    # -- internals --------------------------------------------------------------------

    def _choose(
        self,
        context: Mapping[str, Any],
        actions: Sequence[str] | Mapping[str, Mapping[str, Any]],
        slot: str,
        now: float | None,
        *,
        ahead: bool,
        explain: bool = False,
    ) -> _Choice:
        """Validate, then draw: the decision and its pending record, not yet kept."""
        self._check_slot(slot, creating=True)
        ctx = self._features.parse(context, "context")
        names, afeats = self._features.parse_actions(actions, self.params["max_actions"])
        now = self._now(now)
        # ---- validated: from here on the call succeeds and may change state ----
        self._purge(now)
        vc = None
        if not ahead:  # a page view's own context, not a guess of the next one's
            self._guard.roll_session(now)
            vc = self._features.observe_scaled(ctx)
        if afeats is not None:
            for af in afeats:
                self._features.observe(af)
        X = self._features.transform(ctx, afeats, len(names), vc)
        st = self._slot(slot)
        idx = self._ensure_actions(st, names)
        probs, scores = self._policy_probs(st, idx, X, self._rng)
        p = self.params
        st.boost *= p["drift_explore_decay"]
        default = names.index("default") if "default" in names else 0
        confidence = None
        if self._guard.min_confidence > 0:
            confidence = beat_probability(scores.mean, scores.std * st.sigma(), default)
        q, forced = self._guard.constrain(
            probs, names, default, slot, now, confidence, self._uniform_share
        )
        pl = probs.tolist()
        drawn = draw(pl if q is probs else q.tolist(), self._rng, default, self._guard.holdout)
        k = drawn.index
        reason = reason_of(
            pl,
            k,
            default=default,
            forced=forced,
            holdout=drawn.holdout,
            score=float(scores.mean[k]),
            spread=float(scores.std[k]) * st.sigma(),
        )
        reason_why = self._why(st, idx, X, names, k, scores, context, actions) if explain else None
        event_id = f"{self._prefix}-{self._counter}"
        self._counter += 1
        action = names[k]
        st.models.touch(idx[k], float(self._counter))
        logged_context = logged_actions = None
        if p["log_size"] > 0 or ahead:  # shallow copies now; plain JSON types when read
            logged_context = dict(context)
            logged_actions = (
                names if afeats is None else {a: dict(actions[a]) for a in names}  # type: ignore[index]
            )
        pending = PendingDecision(
            event_id,
            slot,
            action,
            np.array(X[k], dtype=np.float64),
            now,
            drawn.propensity,
            drawn.holdout,
            logged_context,
            logged_actions,
        )
        decision = Decision(
            action, drawn.propensity, event_id, slot, reason, drawn.holdout, reason_why
        )
        return _Choice(decision, pending, k == default, forced or "")

    def _why(
        self,
        st: SlotState,
        idx: list[int],
        X: np.ndarray,
        names: list[str],
        k: int,
        scores: Scores,
        context: Mapping[str, Any],
        actions: Sequence[str] | Mapping[str, Mapping[str, Any]],
    ) -> Why:
        """Why ``names[k]``: its score's largest terms (linear policies) and the runner-up."""
        from .why import top_terms, why  # imported when first asked: it slows every boot

        terms = []
        if scores.beta_a is None:  # a linear score x . theta, term by term
            own = actions[names[k]] if isinstance(actions, Mapping) else None
            sources = self._features.sources(context, own)
            terms = top_terms(X[k], st.models.theta[idx[k]], sources)
        return why(names, k, scores.mean, terms)

    def _pend(self, choice: _Choice) -> None:
        """The decision is shown: it counts for the guardrails and waits for its reward."""
        d = choice.decision
        repeat = choice.forced.startswith("cooldown")
        self._guard.record(d.slot, d.action, choice.is_default, repeat, choice.pending.t)
        self._pending[d.event_id] = choice.pending
        while len(self._pending) > self.params["max_pending"]:
            old_id, old = self._pending.popitem(last=False)
            self._expire(old_id, old)

    def _cascade(
        self,
        rank_one: Callable[..., _Ranked],
        context: Mapping[str, Any],
        items: Sequence[str] | Mapping[str, Mapping[str, Any]],
        slot: str,
        now: float | None,
    ) -> tuple[list[_Ranked], list[str]]:
        """One ``rank_one`` per position among the items left; the decisions and the last item."""
        names, _ = self._features.parse_actions(items, self.params["max_actions"])
        self._check_slot(slot, creating=len(names) > 1)  # one item: no decision, no new slot
        self._features.parse(context, "context")
        now = self._now(now)
        # ---- validated: each rank below gets a subset of valid input, so none can fail ----
        left, decisions = list(names), []
        while len(left) > 1:
            offered = {a: items[a] for a in left} if isinstance(items, Mapping) else left
            decisions.append(rank_one(context, offered, slot=slot, now=now))
            left.remove(decisions[-1].action)
        return decisions, left

    def _now(self, now: float | None) -> float:
        if now is None:
            return time.time()
        if not is_finite_number(now):
            raise InvalidParameter(f"now must be a finite number of seconds, got {now!r}")
        return float(now)

    def _check_slot(self, slot: object, creating: bool) -> None:
        if type(slot) is not str or not slot or len(slot) > 128:
            raise InvalidSlot(
                f"slot must be a non-empty string of at most 128 characters, got {slot!r}"
            )
        if creating and slot not in self._slots and len(self._slots) >= self.params["max_slots"]:
            raise InvalidSlot(
                f"too many slots: {len(self._slots)} in use, max_slots={self.params['max_slots']}"
            )

    def _slot(self, slot: str) -> SlotState:
        st = self._slots.get(slot)
        if st is None:
            p = self.params
            st = SlotState(
                ArmModels(p["dim"], p["l2"], p["discount"], p["refresh_every"]),
                PageHinkley(
                    p["drift_delta"],
                    p["drift_threshold"],
                    p["drift_min_samples"],
                    p["drift_direction"],
                ),
            )
            self._slots[slot] = st
        return st

    def _ensure_actions(self, st: SlotState, names: list[str]) -> list[int]:
        m = st.models
        idx = [m.index.get(a) for a in names]
        if None in idx:
            missing = [a for a, k in zip(names, idx, strict=True) if k is None]
            overflow = len(m.actions) + len(missing) - self.params["max_actions"]
            if overflow > 0:  # evict the least recently used models not offered now
                for k in sorted(m.least_recently_used(overflow, set(names)), reverse=True):
                    m.remove_action(k)
            for a in missing:
                k = m.add_action(a)
                if st.priors:
                    st.install_priors(k)
            idx = [m.index[a] for a in names]
        return idx

    def _policy_probs(
        self, st: SlotState, idx: list[int], X: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, Scores]:
        p = self.params
        scores = self._policy.score(st.models, idx, X, st.sigma())
        floor = max(p["explore_floor"], p["drift_explore"] * st.boost)
        return self._policy.probabilities(scores, floor, rng), scores

    def _learn(self, rec: PendingDecision, value: float) -> None:
        st = self._slots.get(rec.slot)
        if st is not None:
            m = st.models
            k = m.index.get(rec.action)
            if k is not None:
                m.update(k, rec.x, value)
                sigma = st.sigma()
                st.learn_noise(value)
                if self.params["drift_detection"] and st.drift.update(value / sigma):
                    st.drift_resets += 1
                    st.boost = 1.0
                    keep = self.params["drift_keep"]
                    for j in range(len(m.actions)):
                        m.forget(j, keep)
        if self.params["log_size"] > 0:
            self._log.append(LogRecord.rewarded(rec, value))

    def _expire(self, event_id: str, rec: PendingDecision) -> None:
        self._expired.append(event_id)
        if self.params["default_reward"] is not None:
            self._learn(rec, self.params["default_reward"])

    def _purge(self, now: float) -> None:
        window = self.params["attribution_window_s"]
        while self._pending:
            eid, rec = next(iter(self._pending.items()))
            if now <= rec.t + window:
                break
            del self._pending[eid]
            self._expire(eid, rec)


@dataclass(slots=True)
class _Choice:
    """A drawn decision before it is kept: its pending record, and what the guardrails need."""

    decision: Decision
    pending: PendingDecision
    is_default: bool
    forced: str  # the guardrail's reason when one constrained the draw, else ""


_Ranked = TypeVar("_Ranked", Decision, AheadDecision)


def _hex(state: StateReader) -> int:
    """A saved generator word (lowercase hex) back to its integer."""
    try:
        return int(state.str(), 16)
    except ValueError:
        raise state.error("a hexadecimal string") from None
