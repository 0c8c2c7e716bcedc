"""What runs in the visitor's Web Worker, around the engine core.

| module | job |
| --- | --- |
| ``session`` | ``WorkerSession``: the worker's message handler (plain Python, tested on CPython) |
| ``protocol`` | the page ⇄ worker ⇄ Python protocol and its dispatch table, in one place |
| ``signals`` | behavioural signals of one page view, folded from the page's event batches |
| ``triggers`` | safe threshold rules over signals (``data-ma-trigger``) |
| ``ahead`` | decisions made ahead for the next page view, and which of them the page may show |
| ``attribution`` | which decision a goal rewards, and which earned nothing |
| ``segments`` | behavioural micro-segments (scikit-learn, loaded lazily), and their wiring |
| ``sync`` | the session's wiring of the sync server: priors, ``upload`` replies, HTTP results |
| ``sync_client`` | the worker's side of the optional sync server: what may be sent, the batch |
| ``privacy`` | the privacy mechanism applied before anything is uploaded |

Imports only from :mod:`microadjust.core`, never from :mod:`microadjust.server`.
"""
