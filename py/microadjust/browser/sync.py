"""The session's wiring of the optional sync server: it turns :class:`SyncClient` into replies.

:class:`SyncClient` (protocol v2, ``docs/sync-protocol.md``) decides what may be counted and
sent and keeps the batch; this class speaks the worker protocol around it: the priors fetched at
boot, the priors of a slot installed before its first decision on a page, the exposures and
rewards the attribution rule reports, the ``upload`` host reply (the batch and where it goes),
and what the server's HTTP status means for the batch. Times are the wall clock, in seconds.

>>> sync = Sync.from_state(None, config={"site": "shop", "upload": True}, gpc=True, consent=True)
>>> sync.upload_interval_ms()
60000
>>> sync.upload()  # Global Privacy Control is on: nothing is ever built
[]
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..core.engine import Engine
from ..core.errors import InvalidState, MicroadjustError
from .protocol import Replies, reply
from .sync_client import SyncClient


class Sync:
    """This visitor's sync client (the page's ``config.sync``, GPC, consent, counts, batch)."""

    def __init__(self) -> None:
        self.client = SyncClient()

    @classmethod
    def from_state(
        cls, state: Any, *, config: Mapping[str, Any] | None, gpc: bool, consent: bool
    ) -> Sync:
        """Sync for ``config`` (None: off), restoring what :meth:`to_state` saved; a bad
        ``config`` raises a MicroadjustError naming the field. A saved state the client cannot
        read (one of protocol v1, whose sums have no v2 equivalent) starts the counts afresh."""
        sync = cls()
        saved = state if isinstance(state, Mapping) else None
        try:
            sync.client.configure(config, gpc=gpc, consent=consent, saved=saved)
        except InvalidState:
            sync.client.configure(config, gpc=gpc, consent=consent)
        return sync

    @classmethod
    def off(cls) -> Sync:
        """No sync server (none configured, or its configuration was unusable)."""
        return cls()

    def to_state(self) -> dict[str, Any]:
        """What to keep on the device (inside the checkpoint's ``sync``)."""
        return self.client.to_state()

    def forget(self) -> None:
        """Drop every unsent count and the record of installed priors; forgetting also
        withdraws consent. The period's contribution bound stays spent."""
        self.client.forget()
        self.client.set_consent(False)

    def set_consent(self, granted: bool) -> None:
        self.client.set_consent(granted)

    def load_priors(self, priors: Any) -> Replies:
        """Keep the server's priors document, fetched by the host at boot (None: none came).
        A malformed one is reported and the engine starts from what it has."""
        if self.client.config is None or priors is None:
            return []
        try:
            self.client.load_priors(priors)
        except MicroadjustError as error:
            return [reply("error", message=f"sync priors ignored: {error}"), self.synced()]
        return [self.synced()]

    def install_priors(self, engine: Engine, slot: str, context: Mapping[str, Any]) -> Replies:
        """Before ``slot``'s first decision on a page: the site's and the visitor's cell's
        priors become the engine's (nothing when the server has none for the slot)."""
        try:
            self.client.install_priors(engine, slot, context)
        except MicroadjustError as error:  # e.g. another feature space: decide without them
            return [reply("error", slot=slot, message=f"sync priors not installed: {error}")]
        return []

    def synced(self) -> dict[str, Any]:
        return reply(
            "synced", priors_version=self.client.priors_version, uploaded=self.client.uploaded
        )

    def upload_interval_ms(self) -> int | None:
        """How often the host offers an upload; None when sync is off. Whether anything may
        go is decided each time (consent can change)."""
        plan = self.client.describe()
        return None if plan is None else plan["interval_ms"]

    def upload(self) -> Replies:
        """The ``upload`` host reply when a batch may go now (the pending one again, or a
        new one), else nothing."""
        body = self.client.next_upload()
        if body is None:
            return []
        plan = self.client.describe()
        return [
            reply(
                "upload",
                url=plan["uploads_url"],
                key=plan["key"],
                batch_id=body["batch_id"],
                body=json.dumps(body),
            )
        ]

    def result(self, batch_id: str, status: int) -> Replies:
        """The server answered ``status`` to ``batch_id``: a ``synced`` reply once it is done."""
        if 200 <= status < 300:
            done = self.client.acknowledged(batch_id)
        elif 400 <= status < 500 and status not in (408, 429):
            done = self.client.rejected(batch_id)  # refused for good: never resend it
        else:
            return []  # server or network trouble: the same batch is retried later
        return [self.synced()] if done else []
