"""The engine core: pure Python + numpy, the same on CPython and under Pyodide.

| module | job |
| --- | --- |
| ``engine`` | ``rank`` and ``rank_cascade`` choose (``rank_ahead``: for later), ``reward`` learns |
| ``params`` | every engine parameter with its default, and their validation |
| ``features`` | validated contexts and actions to hashed, scaled vectors |
| ``models`` | per-action ridge models and Beta counts of a slot (``ArmModels``) |
| ``slots`` | what the engine keeps per slot: models, priors, reward noise, drift detector |
| ``policies`` | one class per bandit policy: model scores to an exact probability vector |
| ``sampling`` | the draw from that vector (holdout included) and its exact propensity |
| ``reasons`` | the human-readable reason of a decision |
| ``records`` | typed records: decisions (made now or ahead), rankings, pending, log records |
| ``state`` | reading saved states, with errors that name the key path |
| ``drift`` | Page-Hinkley drift detection on rewards |
| ``priors`` | additive statistics and the site → segment → visitor prior hierarchy |
| ``guardrails`` | holdout, caps, cooldowns, minimum confidence |
| ``evaluation`` | off-policy estimates (IPS, SNIPS, DR) and lift against the holdout |
| ``errors`` | the documented exception types |

Everything stateful saves itself with ``to_state()`` and restores with ``from_state()``.
Nothing here imports from :mod:`microadjust.browser` or :mod:`microadjust.server`.
"""
