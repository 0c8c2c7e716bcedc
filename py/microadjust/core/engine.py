"""The decision engine: ``Engine.rank`` chooses, ``Engine.reward`` learns.

A ``rank`` call validates its input (raising an error from :mod:`microadjust.core.errors` and
changing nothing on bad input), hashes the context (and each action's features) into one vector
per action (:mod:`microadjust.core.features`), asks the slot's per-action ridge models for a
mean and an uncertainty, turns them into a probability vector with the policy
(:mod:`microadjust.core.policies`), applies the guardrails (:mod:`microadjust.core.guardrails`)
and draws the action from the result with the engine's single seeded generator:
``Decision.probability`` is the exact probability of that draw. The decision waits (bounded:
``max_pending``) for its reward for ``attribution_window_s`` seconds; ``reward`` updates the
chosen action's model (rank-1), the slot's drift detector (:mod:`microadjust.core.drift`) and
the bounded log used for off-policy evaluation (:mod:`microadjust.core.evaluation`). Each
rewarded decision is one reward; a second reward for the same event raises
:class:`UnknownEvent`. With ``default_reward`` set, decisions that expire unrewarded are learned
with that reward.

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
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from . import evaluation
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
from .policies import (
    POLICIES,
    ArmModels,
    greedy_probabilities,
    sample_share_probabilities,
    sym_from_list,
    sym_to_list,
    ucb_probabilities,
)
from .priors import PRIOR_LEVELS, make_schema, parse_stats, prior_scale

__all__ = ["Engine", "Decision", "DEFAULTS", "AUTO_POLICY", "AUTO_PARAMS"]

STATE_FORMAT = "microadjust.core.engine"
STATE_VERSION = 1
AUTO_POLICY = "linucb"
#: Parameters ``policy="auto"`` uses unless given explicitly: LinUCB with mild forgetting
#: (an effective memory of a few thousand updates per action) on top of drift detection.
AUTO_PARAMS: dict[str, Any] = {"discount": 0.9993}

#: Every parameter ``Engine(**params)`` accepts, with its default.
DEFAULTS: dict[str, Any] = {
    # featurization
    "dim": 64,  # hashed feature dimension per action model (bias included)
    "interactions": True,  # context x action-feature interactions
    "scaling": "rms",  # online scaling of numbers: "rms" (clipped to +-3) or "maxabs"
    "max_features": 256,  # most entries in one context (or one action's features)
    "max_actions": 64,  # most actions per rank call, and action models kept per slot
    "max_slots": 32,
    # models and policies
    "l2": 1.0,  # ridge regularization
    "alpha": 0.5,  # exploration scale (LinUCB bonus / lin_ts posterior width), x noise std
    "epsilon": 0.05,  # epsilon_greedy exploration
    "explore_floor": 0.005,  # explicit floor mixed into linucb / lin_ts / thompson
    "mc_samples": 64,  # Monte-Carlo posterior draws for the Thompson policies
    "discount": 1.0,  # forgetting factor per update of an action (1 = none)
    "refresh_every": 256,  # exact re-inversion of an action's model every N updates
    # drift
    "drift_detection": True,
    "drift_delta": 0.1,
    "drift_threshold": 20.0,
    "drift_min_samples": 20,
    "drift_direction": "down",  # "down": react when rewards fall below what the model expects
    "drift_explore": 0.0,  # exploration floor right after a drift alarm (decays per decision)
    "drift_explore_decay": 0.995,
    "drift_keep": 0.0,  # share of the visitor's own statistics kept after a drift alarm
    # priors
    "prior_strength": 20.0,  # a full-weight prior counts as at most this many observations
    # guardrails
    "holdout": 0.0,
    "max_adjustments_per_session": None,
    "max_adjustments_per_slot": None,
    "cooldown_s": 0.0,
    "min_confidence": 0.0,
    "session_timeout_s": 1800.0,
    # events and logs
    "attribution_window_s": 1800.0,
    "max_pending": 256,
    "default_reward": None,  # reward learned for events that expire unrewarded (None: none)
    "log_size": 256,  # bounded log of rewarded decisions, for off-policy evaluation
}

_INT_PARAMS = {
    "dim": (2, 4096),
    "max_features": (1, 100_000),
    "max_actions": (1, 10_000),
    "max_slots": (1, 10_000),
    "mc_samples": (1, 100_000),
    "refresh_every": (1, 1_000_000),
    "drift_min_samples": (1, 1_000_000),
    "max_pending": (1, 1_000_000),
    "log_size": (0, 1_000_000),
}
_OPTIONAL_INT = ("max_adjustments_per_session", "max_adjustments_per_slot")
_UNIT = {
    "epsilon",
    "explore_floor",
    "holdout",
    "min_confidence",
    "drift_keep",
    "drift_explore",
    "drift_explore_decay",
}
_POSITIVE = {"l2", "discount", "drift_threshold", "session_timeout_s", "attribution_window_s"}
_NONNEG = {"alpha", "drift_delta", "prior_strength", "cooldown_s"}


@dataclass(frozen=True, slots=True)
class Decision:
    """What ``Engine.rank`` chose, with the exact probability it had of being chosen."""

    action: str
    probability: float
    event_id: str
    slot: str = "default"
    reason: str = ""
    holdout: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable view."""
        return asdict(self)


def _check_params(policy: object, params: Mapping[str, Any]) -> dict[str, Any]:
    if policy not in POLICIES:
        raise InvalidParameter(f"unknown policy {policy!r}; expected one of {POLICIES}")
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise InvalidParameter(f"unknown parameter(s) {unknown}; accepted: {sorted(DEFAULTS)}")
    out = dict(DEFAULTS)
    out.update(params)
    for name, value in out.items():
        if name in _INT_PARAMS:
            lo, hi = _INT_PARAMS[name]
            if type(value) is not int or not lo <= value <= hi:
                raise InvalidParameter(f"{name} must be an int in [{lo}, {hi}], got {value!r}")
        elif name in _OPTIONAL_INT:
            if value is not None and (type(value) is not int or value < 0):
                raise InvalidParameter(f"{name} must be None or an int >= 0, got {value!r}")
        elif name in ("interactions", "drift_detection"):
            if type(value) is not bool:
                raise InvalidParameter(f"{name} must be a bool, got {value!r}")
        elif name == "scaling":
            if value not in ("rms", "maxabs"):
                raise InvalidParameter(f"scaling must be 'rms' or 'maxabs', got {value!r}")
        elif name == "drift_direction":
            if value not in ("both", "up", "down"):
                raise InvalidParameter(
                    f"drift_direction must be 'both', 'up' or 'down', got {value!r}"
                )
        elif name == "default_reward":
            if value is not None and not _is_finite_number(value):
                raise InvalidParameter(f"default_reward must be None or finite, got {value!r}")
            out[name] = None if value is None else float(value)
        else:
            if not _is_finite_number(value):
                raise InvalidParameter(f"{name} must be a finite number, got {value!r}")
            value = out[name] = float(value)
            if name in _UNIT and not 0 <= value <= 1:
                raise InvalidParameter(f"{name} must be in [0, 1], got {value!r}")
            if name in _POSITIVE and not value > 0:
                raise InvalidParameter(f"{name} must be > 0, got {value!r}")
            if name in _NONNEG and value < 0:
                raise InvalidParameter(f"{name} must be >= 0, got {value!r}")
            if name == "discount" and value > 1:
                raise InvalidParameter(f"discount must be in (0, 1], got {value!r}")
    if out["holdout"] >= 1:
        raise InvalidParameter("holdout must be < 1")
    return out


def _is_finite_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _as_float(value: object) -> float | None:
    """``value`` as a float if it is a real number (bool, int, float, numpy scalar)."""
    if isinstance(value, int | float) or (
        hasattr(value, "dtype") and hasattr(value, "__float__") and not isinstance(value, str)
    ):
        try:
            return float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
    return None


def _json_features(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Plain-JSON copy of a validated feature mapping (numpy scalars to Python)."""
    out: dict[str, Any] = {}
    for k, v in mapping.items():
        t = type(v)
        if t is float or t is int or t is str or t is bool:
            out[k] = v
        elif type(v).__name__ == "bool_":
            out[k] = bool(v)
        elif isinstance(v, str):
            out[k] = str(v)
        elif isinstance(v, int) or type(v).__name__.startswith(("int", "uint")):
            out[k] = int(v)
        else:
            out[k] = float(v)
    return out


def _json_record(rec: Mapping[str, Any]) -> dict[str, Any]:
    """Copy of a pending or logged record with plain-JSON context and action features."""
    out = dict(rec)
    if "context" in rec:
        out["context"] = _json_features(rec["context"])
        acts = rec["actions"]
        out["actions"] = (
            {a: _json_features(f) for a, f in acts.items()}
            if isinstance(acts, Mapping)
            else list(acts)
        )
    return out


class _Slot:
    """Everything the engine keeps for one slot."""

    __slots__ = ("models", "priors", "noise", "drift", "drift_resets", "boost")

    def __init__(self, models: ArmModels, drift: PageHinkley):
        self.models = models
        # level -> {"weight": w, "actions": {action: (P, p, successes, failures)}}
        self.priors: dict[str, dict[str, Any]] = {}
        self.noise = [0.0, 0.0, 0.0]  # Welford n, mean, M2 of rewards
        self.drift = drift
        self.drift_resets = 0
        self.boost = 0.0  # extra exploration after a drift alarm, decays per decision

    def sigma(self) -> float:
        n, _, m2 = self.noise
        return math.sqrt((m2 + 2 * 0.25) / (n + 2))


class Engine:
    """On-device contextual bandit with guardrails, priors, drift handling and logging.

    ``policy`` is one of ``"auto"`` (``"linucb"`` with :data:`AUTO_PARAMS` as defaults),
    ``"epsilon_greedy"``, ``"thompson"`` (Beta-Bernoulli, context-free), ``"linucb"`` and
    ``"lin_ts"``. ``seed`` seeds the single random generator (``None``: fresh entropy).
    Every other parameter is listed, with its default, in :data:`DEFAULTS`.
    """

    def __init__(self, policy: str = "auto", seed: int | None = 0, **params: Any):
        if policy == "auto":
            params = {**AUTO_PARAMS, **params}
        self.params = _check_params(policy, params)
        if seed is not None and (type(seed) is not int or seed < 0):
            raise InvalidParameter(f"seed must be None or an int >= 0, got {seed!r}")
        self.policy = policy
        self.seed = seed
        p = self.params
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._features = Featurizer(
            dim=p["dim"],
            max_features=p["max_features"],
            interactions=p["interactions"],
            scaling=p["scaling"],
        )
        self._guard = Guardrails(
            holdout=p["holdout"],
            max_adjustments_per_session=p["max_adjustments_per_session"],
            max_adjustments_per_slot=p["max_adjustments_per_slot"],
            cooldown_s=p["cooldown_s"],
            min_confidence=p["min_confidence"],
            session_timeout_s=p["session_timeout_s"],
        )
        self._slots: dict[str, _Slot] = {}
        self._pending: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._expired: deque[str] = deque(maxlen=256)
        self._log: deque[dict[str, Any]] = deque(maxlen=p["log_size"])
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
    ) -> Decision:
        """Choose one of ``actions`` for ``slot`` given ``context``; remember it for reward.

        The default action is the one named ``"default"`` if present, else the first.
        Raises :class:`InvalidContext`, :class:`InvalidActions`, :class:`InvalidSlot` or
        :class:`InvalidParameter` (for ``now``) and then changes nothing.
        """
        self._check_slot(slot, creating=True)
        ctx = self._features.parse(context, "context")
        names, afeats = self._features.parse_actions(actions, self.params["max_actions"])
        now = self._now(now)
        # ---- validated: from here on the call succeeds and may change state ----
        self._purge(now)
        self._guard.roll_session(now)
        vc = self._features.observe_scaled(ctx)
        if afeats is not None:
            for af in afeats:
                self._features.observe(af)
        X = self._features.transform(ctx, afeats, len(names), vc)
        st = self._slot(slot)
        idx = self._ensure_actions(st, names)
        probs, mean, std = self._policy_probs(st, idx, X, self._rng)
        st.boost *= self.params["drift_explore_decay"]
        default = names.index("default") if "default" in names else 0
        confidence = None
        if self._guard.min_confidence > 0:
            confidence = beat_probability(mean, std * st.sigma(), default)
        p = self.params
        explore = p["epsilon"] if self.resolved_policy == "epsilon_greedy" else p["explore_floor"]
        q, forced = self._guard.constrain(probs, names, default, slot, now, confidence, explore)
        h = self._guard.holdout
        is_holdout = bool(h > 0 and self._rng.random() < h)
        ql = q.tolist()
        if is_holdout:
            k = default
        else:  # inverse-CDF sampling with one uniform draw
            u = self._rng.random() * math.fsum(ql)
            k = 0
            acc = ql[0]
            last = len(ql) - 1
            while (acc <= u or ql[k] <= 0) and k < last:
                k += 1
                acc += ql[k]
            while ql[k] <= 0:  # numerical edge: never pick a zero-probability action
                k -= 1
        propensity = (h if k == default else 0.0) + (1.0 - h) * ql[k]
        propensity = min(max(propensity, 1e-12), 1.0)
        pl = probs.tolist()
        top = max(pl)
        if is_holdout:
            reason = "holdout: default"
        elif forced is not None and (forced.startswith("cooldown") or k == default):
            reason = forced
        elif pl[k] >= top - 1e-12 and top > 1.0 / len(pl) + 1e-12:
            reason = f"exploit: score {float(mean[k]):.3g} ± {float(std[k]) * st.sigma():.2g}"
        else:
            reason = "explore"
        event_id = f"{self._prefix}-{self._counter}"
        self._counter += 1
        action = names[k]
        self._guard.record(
            slot, action, k == default, bool(forced and forced.startswith("cooldown")), now
        )
        st.models.scalars[idx[k], 8] = float(self._counter)
        rec: dict[str, Any] = {
            "slot": slot,
            "action": action,
            "x": np.array(X[k], dtype=np.float64),
            "t": now,
            "propensity": propensity,
            "holdout": is_holdout,
        }
        if self.params["log_size"] > 0:
            # shallow copies now; converted to plain JSON types when the log is read
            rec["context"] = dict(context)
            rec["actions"] = (
                names if afeats is None else {a: dict(actions[a]) for a in names}  # type: ignore[index]
            )
        self._pending[event_id] = rec
        while len(self._pending) > self.params["max_pending"]:
            old_id, old = self._pending.popitem(last=False)
            self._expire(old_id, old)
        return Decision(action, propensity, event_id, slot, reason, is_holdout)

    def reward(self, event_id: str, value: float, *, now: float | None = None) -> None:
        """Learn ``value`` as the reward of decision ``event_id`` (one reward per decision).

        Raises :class:`InvalidReward` (not a finite number), :class:`UnknownEvent` (never
        issued, or already rewarded) or :class:`ExpiredEvent` (after the attribution window,
        or evicted because too many decisions were pending) and then changes nothing.
        """
        number = _as_float(value)
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
        if now - rec["t"] > self.params["attribution_window_s"]:
            raise ExpiredEvent(
                f"event {event_id!r} is {now - rec['t']:.0f} s old, past the attribution "
                f"window of {self.params['attribution_window_s']:.0f} s"
            )
        # ---- validated ----
        del self._pending[event_id]
        self._learn(rec, value)
        self._purge(now)

    def state(self) -> dict[str, Any]:
        """JSON-serializable snapshot; :meth:`from_state` restores it exactly (RNG too)."""
        bg = self._rng.bit_generator.state
        slots = {}
        for name, st in self._slots.items():
            slots[name] = {
                "models": st.models.to_dict(),
                "priors": {
                    level: {
                        "weight": pr["weight"],
                        "actions": {
                            a: [sym_to_list(P), p.tolist(), s, f]
                            for a, (P, p, s, f) in pr["actions"].items()
                        },
                    }
                    for level, pr in st.priors.items()
                },
                "noise": list(st.noise),
                "drift": st.drift.to_dict(),
                "drift_resets": st.drift_resets,
                "boost": st.boost,
            }
        pending = []
        for eid, rec in self._pending.items():
            r = _json_record(rec)
            r["x"] = rec["x"].tolist()
            pending.append([eid, r])
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
            "guard": self._guard.to_dict(),
            "slots": slots,
            "pending": pending,
            "expired": list(self._expired),
            "log": [_json_record(r) for r in self._log],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Engine:
        """Rebuild an engine from :meth:`state` (raises :class:`InvalidState`)."""
        if not isinstance(state, Mapping):
            raise InvalidState(f"state must be a mapping, got {type(state).__name__}")
        if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
            raise InvalidState(
                f"not a {STATE_FORMAT} v{STATE_VERSION} state (format={state.get('format')!r}, "
                f"version={state.get('version')!r})"
            )
        try:
            eng = cls(state["policy"], state["seed"], **state["params"])
            p = eng.params
            dim = p["dim"]
            rng = state["rng"]
            if rng["bit_generator"] != "PCG64":
                raise ValueError("unsupported bit generator")
            eng._rng.bit_generator.state = {
                "bit_generator": "PCG64",
                "state": {"state": int(rng["state"], 16), "inc": int(rng["inc"], 16)},
                "has_uint32": int(rng["has_uint32"]),
                "uinteger": int(rng["uinteger"]),
            }
            eng._prefix = str(state["prefix"])
            eng._counter = int(state["counter"])
            eng._features.scale = {
                str(k): [float(v[0]), float(v[1])] for k, v in state["scale"].items()
            }
            eng._guard.load(state["guard"])
            for name, sd in state["slots"].items():
                models = ArmModels.from_dict(
                    sd["models"], dim, p["l2"], p["discount"], p["refresh_every"]
                )
                st = _Slot(models, PageHinkley.from_dict(sd["drift"]))
                st.noise = [float(v) for v in sd["noise"]]
                st.drift_resets = int(sd["drift_resets"])
                st.boost = float(sd["boost"])
                for level, pr in sd["priors"].items():
                    if level not in PRIOR_LEVELS:
                        raise ValueError(f"unknown prior level {level!r}")
                    st.priors[level] = {
                        "weight": float(pr["weight"]),
                        "actions": {
                            str(a): (
                                sym_from_list(v[0], dim),
                                np.array(v[1], dtype=np.float64).reshape(dim),
                                float(v[2]),
                                float(v[3]),
                            )
                            for a, v in pr["actions"].items()
                        },
                    }
                for k, a in enumerate(models.actions):
                    P, pv, s, f = eng._combined_prior(st, a)
                    models.P[k], models.p[k] = P, pv
                eng._slots[str(name)] = st
            for eid, r in state["pending"]:
                rec = dict(r)
                rec["x"] = np.array(r["x"], dtype=np.float64).reshape(dim)
                rec["t"] = float(rec["t"])
                rec["propensity"] = float(rec["propensity"])
                eng._pending[str(eid)] = rec
            eng._expired.extend(str(e) for e in state["expired"])
            eng._log.extend(dict(r) for r in state["log"])
        except MicroadjustError as exc:
            raise InvalidState(f"invalid state: {exc}") from exc
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise InvalidState(f"invalid state: {type(exc).__name__}: {exc}") from exc
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
                s = m.scalars[k]
                actions[a] = {
                    "n": float(s[0]),
                    "reward_sum": float(s[1]),
                    "reward_sq_sum": float(s[2]),
                    "successes": float(s[3]),
                    "failures": float(s[4]),
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
        if not _is_finite_number(weight) or weight < 0:
            raise InvalidPrior(f"prior weight must be a finite number >= 0, got {weight!r}")
        parsed = parse_stats(stats, self.schema())
        strength = self.params["prior_strength"]
        scaled = {}
        for a, (xtx, xty, sc) in parsed.items():
            c = prior_scale(sc["n"], float(weight), strength)
            scaled[a] = (c * xtx, c * xty, c * sc["successes"], c * sc["failures"])
        st = self._slot(slot)
        if weight == 0:
            st.priors.pop(level, None)
        else:
            st.priors[level] = {"weight": float(weight), "actions": scaled}
        m = st.models
        for k, a in enumerate(m.actions):
            P, p, s, f = self._combined_prior(st, a)
            m.set_prior(k, P, p, s, f)

    # -- evaluation ---------------------------------------------------------------------

    def log(self, slot: str | None = None) -> list[dict[str, Any]]:
        """The bounded log of rewarded decisions (oldest first), optionally for one slot."""
        return [_json_record(r) for r in self._log if slot is None or r["slot"] == slot]

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
        known = [a in m.index for a in names]
        if not all(known):  # an unseen action: evaluate on a throwaway copy
            tmp = _Slot(ArmModels(m.dim, m.l2), st.drift)
            tmp.noise = st.noise
            for a in names:
                k = tmp.models.add_action(a)
                if a in m.index:
                    j = m.index[a]
                    for attr in ("A_inv", "b", "theta", "G", "g", "P", "p", "scalars"):
                        getattr(tmp.models, attr)[k] = getattr(m, attr)[j]
                    tmp.models.rows[k] = list(m.rows[j])
            st = tmp
        idx = [st.models.index[a] for a in names]
        rng = np.random.Generator(np.random.PCG64(12345))
        probs, _, _ = self._policy_probs(st, idx, X, rng)
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
        return evaluation.lift(self.log(slot), confidence=confidence)

    def drift_resets(self, slot: str = "default") -> int:
        """How many times drift was detected (and the visitor model reset) in ``slot``."""
        st = self._slots.get(slot)
        return 0 if st is None else st.drift_resets

    # -- internals --------------------------------------------------------------------

    def _now(self, now: float | None) -> float:
        if now is None:
            return time.time()
        if not _is_finite_number(now):
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

    def _slot(self, slot: str) -> _Slot:
        st = self._slots.get(slot)
        if st is None:
            p = self.params
            st = _Slot(
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

    def _combined_prior(
        self, st: _Slot, action: str
    ) -> tuple[np.ndarray, np.ndarray, float, float]:
        d = self.params["dim"]
        P, p, s, f = np.zeros((d, d)), np.zeros(d), 0.0, 0.0
        for level in PRIOR_LEVELS:
            pr = st.priors.get(level)
            if pr is not None and action in pr["actions"]:
                lp = pr["actions"][action]
                P, p, s, f = P + lp[0], p + lp[1], s + lp[2], f + lp[3]
        return P, p, s, f

    def _ensure_actions(self, st: _Slot, names: list[str]) -> list[int]:
        m = st.models
        missing = [a for a in names if a not in m.index]
        if missing:
            limit = self.params["max_actions"]
            overflow = len(m.actions) + len(missing) - limit
            if overflow > 0:  # evict the least recently used models not offered now
                wanted = set(names)
                candidates = sorted(
                    (m.scalars[k, 8], k) for k, a in enumerate(m.actions) if a not in wanted
                )
                for k in sorted((k for _, k in candidates[:overflow]), reverse=True):
                    m.remove_action(k)
            for a in missing:
                k = m.add_action(a)
                if st.priors:
                    P, p, s, f = self._combined_prior(st, a)
                    m.set_prior(k, P, p, s, f)
        return [m.index[a] for a in names]

    def _policy_probs(
        self, st: _Slot, idx: list[int], X: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = self.params
        policy = self.resolved_policy
        mean, std = st.models.predict(idx, X)
        sigma = st.sigma()
        floor = max(p["explore_floor"], p["drift_explore"] * st.boost)
        if policy == "epsilon_greedy":
            probs = greedy_probabilities(mean, max(p["epsilon"], floor))
        elif policy == "linucb":
            probs = ucb_probabilities(mean, std, p["alpha"] * sigma, floor)
        elif policy == "lin_ts":
            draws = mean + (p["alpha"] * sigma) * std * rng.standard_normal(
                (p["mc_samples"], len(idx))
            )
            probs = sample_share_probabilities(draws, floor)
        else:  # thompson
            a, b = st.models.beta_params(idx)
            draws = rng.beta(a, b, size=(p["mc_samples"], len(idx)))
            probs = sample_share_probabilities(draws, floor)
            mean = a / (a + b)
            std = np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1))) / max(sigma, 1e-12)
        return probs, mean, std

    def _learn(self, rec: dict[str, Any], value: float) -> None:
        st = self._slots.get(rec["slot"])
        if st is not None:
            m = st.models
            k = m.index.get(rec["action"])
            if k is not None:
                m.update(k, rec["x"], value)
                sigma = st.sigma()
                n, mu, m2 = st.noise
                n += 1.0
                delta = value - mu
                mu += delta / n
                m2 += delta * (value - mu)
                st.noise = [n, mu, m2]
                if self.params["drift_detection"] and st.drift.update(value / sigma):
                    st.drift_resets += 1
                    st.boost = 1.0
                    keep = self.params["drift_keep"]
                    for j in range(len(m.actions)):
                        m.forget(j, keep)
        if self.params["log_size"] > 0:
            entry = {k: v for k, v in rec.items() if k != "x"}
            entry["reward"] = value
            self._log.append(entry)

    def _expire(self, event_id: str, rec: dict[str, Any]) -> None:
        self._expired.append(event_id)
        if self.params["default_reward"] is not None:
            self._learn(rec, self.params["default_reward"])

    def _purge(self, now: float) -> None:
        window = self.params["attribution_window_s"]
        while self._pending:
            eid, rec = next(iter(self._pending.items()))
            if now - rec["t"] <= window:
                break
            del self._pending[eid]
            self._expire(eid, rec)
