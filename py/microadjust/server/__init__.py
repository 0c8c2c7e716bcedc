"""The optional sync server (never shipped to browsers): priors down, bounded uploads up.

| module | job |
| --- | --- |
| ``models`` | the protocol v2 as pydantic types: site declaration, upload, priors, admin bodies |
| ``api`` | the FastAPI app: routes, error bodies, the in-memory priors cache |
| ``aggregate`` | per-bucket sums of uploads and their robust (capped, decayed) totals |
| ``publication`` | central DP: noise scale, zCDP budget, the priors document |
| ``encoded`` | a priors version compressed once and served with ETag and Cache-Control |
| ``storage`` | SQLite or PostgreSQL: uploads, bucket sums, versions, declarations |
| ``groupcommit`` | uploads arriving together stored in one transaction (one commit each batch) |
| ``singleflight`` | one store read for all the requests that find a cached value stale |
| ``migrations`` | the versioned schema |
| ``security`` | upload keys, the admin token, rate limits, body limits, source buckets |
| ``report`` | the site owner's report: rates per slot and cell, lift against the holdout |
| ``static`` | serving the built bundle |
| ``config``, ``cli`` | settings and their command-line options |

The protocol is docs/sync-protocol.md.
"""
