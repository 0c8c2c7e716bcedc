"""The engine core: pure Python + numpy, the same on CPython and under Pyodide.

| module | job |
| --- | --- |
| ``engine`` | ``Engine.rank`` chooses, ``Engine.reward`` learns; state in and out |
| ``features`` | validated contexts and actions to hashed, scaled vectors |
| ``policies`` | bandit policies: model scores to an exact probability vector |
| ``drift`` | Page-Hinkley drift detection on rewards |
| ``priors`` | additive statistics and the site → segment → visitor prior hierarchy |
| ``guardrails`` | holdout, caps, cooldowns, minimum confidence |
| ``evaluation`` | off-policy estimates (IPS, SNIPS, DR) and lift against the holdout |
| ``errors`` | the documented exception types |

Nothing here imports from :mod:`microadjust.browser` or :mod:`microadjust.server`.
"""
