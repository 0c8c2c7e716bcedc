"""Group commit: the uploads that arrive while one write is running go together in the next.

One transaction per upload makes every upload wait for its own commit (an fsync on SQLite, a
round trip and a site lock on PostgreSQL) and, worse, makes the thread pool's writers queue for
the one write lock: SQLite's busy handler sleeps with growing back-offs, which is a tail of
seconds at 200 concurrent uploads (measured: p50 150 ms, p99 0.8 s, max 3.7 s inside the app).
Here one writer at a time runs ``write`` (in a worker thread) on everything that is pending;
each caller gets its own result once the batch is committed, so an acknowledged upload is
still a durable one, and no upload waits for more than the write in progress and its own.
Tested in tests/test_sync_concurrency.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from starlette.concurrency import run_in_threadpool

__all__ = ["GroupCommit"]

Item = TypeVar("Item")
Result = TypeVar("Result")


class GroupCommit(Generic[Item, Result]):
    """Batch concurrent :meth:`submit` calls into calls of ``write`` (one at a time).

    ``write`` takes a batch and returns one result per item, in order; if it raises, every
    caller of that batch gets the error. At most ``max_batch`` items go in one write.
    """

    def __init__(
        self, write: Callable[[Sequence[Item]], Sequence[Result]], max_batch: int = 500
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch!r}")
        self.write = write
        self.max_batch = max_batch
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        """Write ``item`` with whatever else is pending; its result once committed."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Result] = loop.create_future()
        self._pending.append((item, answer))
        writer = self._writer
        if writer is None or writer.done() or writer.get_loop() is not loop:
            self._writer = loop.create_task(self._write_pending())
        return await answer

    async def _write_pending(self) -> None:
        while self._pending:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            try:
                results = await run_in_threadpool(self.write, [item for item, _ in batch])
            except Exception as exc:
                for _, answer in batch:
                    if not answer.done():  # a caller that went away no longer waits
                        answer.set_exception(exc)
                continue
            for (_, answer), result in zip(batch, results, strict=True):
                if not answer.done():
                    answer.set_result(result)
