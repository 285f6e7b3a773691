"""Runs one blocking botocore event stream in a thread and hands its events to asyncio.

botocore reads ConverseStream with blocking socket reads. A dedicated daemon thread
(not the loop's default executor) does the reading, so a long or stalled stream never
holds an executor slot that ``asyncio.to_thread`` callers need, and a thread left
behind cannot delay the loop's shutdown. Events cross to the loop through an
``asyncio.Queue`` fed with ``loop.call_soon_threadsafe``.

Cancellation: ``cancel()`` shuts the socket down for reading, which wakes the blocked
read at once; the thread then sees the cancel flag, closes the EventStream and ends.
Closing the EventStream directly from the loop thread is not enough: the close waits
for the buffered reader's lock, which the reading thread holds until its read returns
(i.e. until the read timeout), and it would block the event loop meanwhile.
Before the response headers have arrived there is no EventStream to shut down yet: the
thread then ends at the client's read timeout, which the provider derives from the
caller's own timeout (see `bedrock.transport_timeout`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

_thread_numbers = itertools.count(1)
THREAD_NAME_PREFIX = "bedrock-stream-"


class EventStreamLike(Protocol):
    """What the pump needs of botocore's EventStream."""

    def __iter__(self) -> Iterator[Mapping[str, Any]]: ...

    def close(self) -> None: ...


class StreamCancelled(Exception):
    """Raised to a consumer still reading a stream that was cancelled under it."""


@dataclass(frozen=True)
class _Failure:
    error: BaseException


_END = object()
# Posted by cancel(), so a consumer still waiting (aclose() from elsewhere) wakes up.
_CANCELLED = object()


def _interrupt(stream: EventStreamLike) -> None:
    """Wake a thread blocked reading `stream`, without blocking the caller."""
    # botocore keeps the urllib3 response privately; urllib3 >= 2.3 offers shutdown(),
    # the documented way to interrupt a read from another thread.
    raw = getattr(stream, "_raw_stream", None)
    shutdown = getattr(raw, "shutdown", None)
    if callable(shutdown):
        # Errors mean the response is already closed or released: nothing is blocked on it.
        with contextlib.suppress(OSError, RuntimeError, ValueError):
            shutdown()
        return
    # Without shutdown(), close from a helper thread: it may wait for the read timeout,
    # but must not stall the event loop.
    threading.Thread(target=_close_quietly, args=(stream,), daemon=True).start()


def _close_quietly(stream: EventStreamLike) -> None:
    # A failing close of a dead stream changes nothing worth reporting.
    with contextlib.suppress(Exception):
        stream.close()


class StreamPump:
    """One event stream read in a thread: ``start()``, then ``await next()`` until None."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        open_stream: Callable[[], EventStreamLike],
    ) -> None:
        self._loop = loop
        self._open_stream = open_stream
        # Unbounded: an answer is small, and a bounded queue would make the reader
        # thread block on the loop, which a cancelled consumer may never drain.
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._lock = threading.Lock()
        self._stream: EventStreamLike | None = None
        self._cancelled = False
        self.thread = threading.Thread(
            target=self._run, name=f"{THREAD_NAME_PREFIX}{next(_thread_numbers)}", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    @property
    def cancelled(self) -> bool:
        """Whether cancel() was called (readable from any thread)."""
        return self._cancelled

    async def next(self) -> Mapping[str, Any] | None:
        """The next raw event, None at the end; re-raises the reader's exception."""
        item = await self._queue.get()
        if item is _END:
            return None
        if item is _CANCELLED:
            raise StreamCancelled("the Bedrock stream was closed before it ended")
        if isinstance(item, _Failure):
            raise item.error
        assert isinstance(item, Mapping)
        return item

    def cancel(self) -> None:
        """Stop reading: safe from the loop thread, idempotent, returns at once."""
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
            stream, self._stream = self._stream, None
        if stream is not None:
            _interrupt(stream)
        self._post(_CANCELLED)

    def _post(self, item: object) -> None:
        # RuntimeError: the loop is closed, so nobody is waiting for this stream any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _run(self) -> None:
        stream: EventStreamLike | None = None
        try:
            stream = self._open_stream()
            with self._lock:
                if self._cancelled:
                    return
                self._stream = stream
            for event in stream:
                if self._cancelled:
                    return
                self._post(event)
            self._post(_END)
        except Exception as exc:
            # After a cancel, the error is the interrupted read itself: nobody wants it.
            if not self._cancelled:
                self._post(_Failure(exc))
        finally:
            with self._lock:
                self._stream = None
            if stream is not None:
                _close_quietly(stream)
