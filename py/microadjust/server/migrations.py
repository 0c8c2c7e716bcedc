"""Versioned schema migrations, for SQLite and PostgreSQL alike (portable SQL only).

Each migration is applied once, in order, in its own transaction, and recorded in
``schema_migrations``. Add new ones at the end; never edit one that has shipped. A migration
whose data comes from the stored uploads (``DATA_FROM_UPLOADS``) has it computed by
:meth:`.storage.Storage.migrate` in the same transaction, after its statements.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "uploads, aggregates, published priors, site state",
        [
            """CREATE TABLE uploads (
                site TEXT NOT NULL,
                batch_id TEXT NOT NULL,
                received_at DOUBLE PRECISION NOT NULL,
                events INTEGER NOT NULL,
                PRIMARY KEY (site, batch_id))""",
            """CREATE TABLE aggregates (
                site TEXT NOT NULL,
                slot TEXT NOT NULL,
                data TEXT NOT NULL,
                uploads INTEGER NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (site, slot))""",
            """CREATE TABLE priors (
                site TEXT NOT NULL,
                version INTEGER NOT NULL,
                body TEXT NOT NULL,
                etag TEXT NOT NULL,
                published_at DOUBLE PRECISION NOT NULL,
                note TEXT NOT NULL,
                PRIMARY KEY (site, version))""",
            """CREATE TABLE sites (
                site TEXT PRIMARY KEY,
                current_version INTEGER,
                frozen INTEGER NOT NULL DEFAULT 0,
                aggregated_at DOUBLE PRECISION NOT NULL DEFAULT 0,
                published_at DOUBLE PRECISION NOT NULL DEFAULT 0)""",
        ],
    ),
    (
        2,
        "protocol v2: uploads as received, per-day source-bucket sums, declared sites, budget",
        [
            "DROP TABLE aggregates",
            "DROP TABLE uploads",
            "DELETE FROM priors",  # v1 priors are not v2 documents
            "UPDATE sites SET current_version = NULL, aggregated_at = 0, published_at = 0",
            """CREATE TABLE uploads (
                site TEXT NOT NULL,
                batch_id TEXT NOT NULL,
                received_at DOUBLE PRECISION NOT NULL,
                bucket INTEGER NOT NULL,
                body TEXT NOT NULL,
                PRIMARY KEY (site, batch_id))""",
            "CREATE INDEX uploads_received ON uploads (site, received_at)",
            """CREATE TABLE bucket_sums (
                site TEXT NOT NULL,
                day INTEGER NOT NULL,
                slot TEXT NOT NULL,
                bucket INTEGER NOT NULL,
                sums TEXT NOT NULL,
                PRIMARY KEY (site, day, slot, bucket))""",
            """CREATE TABLE day_secrets (
                day INTEGER PRIMARY KEY,
                secret TEXT NOT NULL)""",
            """CREATE TABLE site_declarations (
                site TEXT PRIMARY KEY,
                body TEXT NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL)""",
            "ALTER TABLE sites ADD COLUMN budget_day INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE sites ADD COLUMN rho_spent DOUBLE PRECISION NOT NULL DEFAULT 0",
        ],
    ),
    (
        3,
        "shared rate-limit buckets (ratelimit.PostgresBuckets; created on first use before)",
        [
            """CREATE TABLE IF NOT EXISTS rate_limit_buckets (
                bucket TEXT PRIMARY KEY,
                tokens DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL,
                allowed BOOLEAN NOT NULL)""",
        ],
    ),
    (
        4,
        "continual release: noisy increments stored once (release.py); the daily budget retired",
        [
            # counts NULL: the increment waits to be (re-)released (a purge touched it)
            """CREATE TABLE released_increments (
                site TEXT NOT NULL,
                seq INTEGER NOT NULL,
                since DOUBLE PRECISION NOT NULL,
                until DOUBLE PRECISION NOT NULL,
                sigma DOUBLE PRECISION NOT NULL,
                counts TEXT,
                released_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (site, seq))""",
            # uploads received up to this are in a released increment; later ones never are
            # (storage raises received_at above it). 0: every stored upload is released once more
            # in the first increment (stated in docs/sync-protocol.md section 5)
            "ALTER TABLE sites ADD COLUMN released_until DOUBLE PRECISION NOT NULL DEFAULT 0",
        ],
    ),
    (
        5,
        "running sums of the increments not yet released (publication reads no raw upload)",
        [
            # per increment not yet released (the open one, and the ones cut or purged but not
            # released since), slot and source bucket: the sum of its uploads, each scaled to one
            # visitor's norm and not capped (release.py caps each bucket when it is released)
            """CREATE TABLE increment_sums (
                site TEXT NOT NULL,
                seq INTEGER NOT NULL,
                slot TEXT NOT NULL,
                bucket INTEGER NOT NULL,
                sums TEXT NOT NULL,
                PRIMARY KEY (site, seq, slot, bucket))""",
            # the increment that uploads received after released_until are summed into
            "ALTER TABLE sites ADD COLUMN open_seq INTEGER NOT NULL DEFAULT 1",
            """UPDATE sites SET open_seq = 1 + COALESCE(
                (SELECT MAX(seq) FROM released_increments r WHERE r.site = sites.site), 0)""",
            # how often the site's sums were rebuilt from its uploads (a purge): a publication
            # that read sums before a rebuild does not store what it drew from them
            "ALTER TABLE sites ADD COLUMN rebuilds INTEGER NOT NULL DEFAULT 0",
            # then Storage.migrate sums the stored uploads of every site into increment_sums
        ],
    ),
    (
        6,
        "local-mode noise kept per released increment; the bound the running sums are under",
        [
            # slot -> cell -> variance per number (release.NoiseTable); NULL: none. Increments
            # released before this have it NULL: their local-mode noise was not tracked
            "ALTER TABLE released_increments ADD COLUMN local_noise TEXT",
            # the max_shown the site's running sums are scaled to (Storage.match_bound); NULL:
            # not known, so they are rebuilt under the server's bound at its next start
            "ALTER TABLE sites ADD COLUMN sums_max_shown INTEGER",
        ],
    ),
]

LATEST = MIGRATIONS[-1][0]
DATA_FROM_UPLOADS = 5  # the migration after whose statements the sums are built from the uploads
