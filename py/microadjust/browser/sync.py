"""The session's wiring of the optional sync server: it turns :class:`SyncClient` into replies.

:class:`SyncClient` decides what may be sent and keeps the batch; this class speaks the
protocol around it: the priors fetched at boot, the ``upload`` host reply (the batch and where
it goes), and what the server's HTTP status means for the batch.

>>> sync = Sync.from_state(None, config={"site": "shop", "upload": True}, gpc=True, consent=True)
>>> sync.upload_interval_ms()
60000
>>> sync.upload(engine=None)  # Global Privacy Control is on: nothing is ever built
[]
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..core.engine import Engine
from ..core.errors import MicroadjustError
from .protocol import Replies, reply
from .sync_client import SyncClient


class Sync:
    """This visitor's sync: the page's ``config.sync``, the GPC signal, consent and the client."""

    def __init__(self, config: Mapping[str, Any] | None, *, gpc: bool) -> None:
        self.config, self.gpc = config, gpc
        self.client = SyncClient()

    @classmethod
    def from_state(
        cls, state: Any, *, config: Mapping[str, Any] | None, gpc: bool, consent: bool
    ) -> Sync:
        """Sync for ``config`` (None: off), restoring what :meth:`to_state` saved; a bad
        ``config`` raises a MicroadjustError naming the field."""
        sync = cls(config, gpc=gpc)
        saved = state if isinstance(state, Mapping) else None
        sync.client.configure(config, gpc=gpc, consent=consent, saved=saved)
        return sync

    @classmethod
    def off(cls) -> Sync:
        """No sync server (none configured, or its configuration was unusable)."""
        return cls(None, gpc=False)

    def to_state(self) -> dict[str, Any]:
        """What to keep on the device (inside the checkpoint's ``sync``)."""
        return self.client.state()

    def forget(self) -> None:
        """Drop the pending batch and the upload history; forgetting also withdraws consent."""
        self.client = SyncClient()
        self.client.configure(self.config, gpc=self.gpc, consent=False)

    def set_consent(self, granted: bool) -> None:
        self.client.set_consent(granted)

    def install_priors(self, engine: Engine, priors: Any) -> Replies:
        """The server's priors, fetched by the host at boot, become the engine's site priors."""
        if self.client.describe() is None or priors is None:
            return []
        problems = self.client.apply_priors(engine, priors)
        return [*(reply("error", message=problem) for problem in problems), self.synced()]

    def synced(self) -> dict[str, Any]:
        return reply(
            "synced", priors_version=self.client.priors_version, uploaded=self.client.uploaded
        )

    def upload_interval_ms(self) -> int | None:
        """How often the host offers an upload; None when sync is off. Whether anything may
        go is decided each time (consent can change)."""
        plan = self.client.describe()
        return None if plan is None else plan["interval_ms"]

    def upload(self, engine: Engine) -> Replies:
        """The ``upload`` host reply when a batch may go now (the pending one again, or a
        new one), else nothing."""
        try:
            body = self.client.next_upload(engine)
        except MicroadjustError:  # the engine cannot describe its decisions: try next time
            return []
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
