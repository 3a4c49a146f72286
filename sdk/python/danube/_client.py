"""The gRPC connection to the engine's JobService.

`grpc` and the generated code are imported only when the coordinator
connects, so that `import danube` works where only the SDK is installed (for
IDE completion).

Every call carries the job token as `authorization: Bearer <token>` metadata.
Failures come out as `EngineError`, with the gRPC status code's name in
`code`, so callers can map the codes they expect to their own exceptions.

Retries: a call that finds the engine unreachable (`UNAVAILABLE`) is retried
with backoff until the retry window (30 s by default) has passed since the
first failure, then raises `EngineUnavailable`. That holds for unary calls
and for opening `WatchSchedule`. `RunStep` and `UploadArtifact` have side
effects, so they only wait, within the same window, for the connection to
be ready before they start. If the connection breaks once they are under
way, they raise `EngineUnavailable` and are not sent again, because the
engine may already have run the command. gRPC itself retries a call that
never left this process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .errors import DanubeError, EngineError, EngineUnavailable

if TYPE_CHECKING:
    import grpc

__all__ = ["EngineClient", "connect", "get_client", "set_client"]

log = logging.getLogger("danube")

DEFAULT_RETRY_WINDOW_SECONDS = 30.0
"""How long an unreachable engine is retried before the call fails."""

UNARY_TIMEOUT_SECONDS = 60.0
"""The deadline of each unary call, so that a stuck engine cannot hang the
coordinator. Streaming calls have none: a step may run for hours."""

_FIRST_BACKOFF_SECONDS = 0.1
_MAX_BACKOFF_SECONDS = 2.0


class EngineClient:
    """A channel to the engine plus the job token. Safe to share between threads.

    The channel stays open for the life of the process. It has no `close()`
    on purpose: closing a grpcio 1.85 channel while `channel_ready_future`'s
    connectivity thread is polling makes that thread raise.
    """

    def __init__(
        self,
        address: str,
        token: str,
        retry_window: float = DEFAULT_RETRY_WINDOW_SECONDS,
    ) -> None:
        import grpc

        from ._proto import job_pb2, job_pb2_grpc

        self._grpc = grpc
        self.messages: Any = job_pb2
        """The generated message classes (`danube._proto.job_pb2`)."""
        self.address = address
        self.retry_window = retry_window
        # gRPC's default reconnect backoff (doc/connection-backoff.md in
        # grpc/grpc) starts at 1 s and grows 1.6 times per failure, leaving
        # gaps of about 10 s within a 30 s window. Capped at 2 s, an engine
        # that comes back is reached within about 2 s.
        self._channel = grpc.insecure_channel(
            address,
            options=[
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 2000),
            ],
        )
        self._stub = job_pb2_grpc.JobServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._metadata = (("authorization", f"Bearer {token}"),)

    def unary(self, method: str, request: Any) -> Any:
        """Call a unary method, retrying while the engine is unreachable.

        Raises:
            EngineUnavailable: the engine stayed unreachable for the retry window.
            EngineError: the engine returned another error status.
        """
        rpc = getattr(self._stub, method)
        backoff = _Backoff(method, self.retry_window)
        while True:
            try:
                return rpc(request, metadata=self._metadata, timeout=UNARY_TIMEOUT_SECONDS)
            except self._grpc.RpcError as error:
                backoff.wait_or_raise(self._to_engine_error(method, error))

    def resumable_stream(self, method: str, request: Any) -> ResumableStream:
        """Return a server stream that opens again when the engine becomes
        unreachable. The retry window restarts with every message received.

        The stream may repeat messages after it reopens: the caller must
        tolerate duplicates.
        """
        return ResumableStream(self, method, request)

    def stream_once(self, method: str, request: Any) -> Iterator[Any]:
        """Yield a server stream's messages; the call is sent once.

        Raises:
            EngineUnavailable: the engine was unreachable for the retry window
                before the call, or the connection broke during it.
            EngineError: the engine ended the stream with another error status.
        """
        self._wait_until_ready(method)
        call = getattr(self._stub, method)(request, metadata=self._metadata)
        try:
            yield from call
        except self._grpc.RpcError as error:
            raise self._to_engine_error(method, error) from None
        finally:
            call.cancel()

    def upload(
        self, method: str, make_requests: Callable[[Callable[[], None]], Iterable[Any]]
    ) -> Any:
        """Send a client stream once and return the engine's response.

        `make_requests` receives `abort`, which cancels the call. A request
        iterator that cannot go on must call `abort` and then stop: ending
        without it would tell the engine that the stream is complete, and
        raising would make gRPC log the exception as its own error.

        Raises:
            EngineUnavailable: the engine was unreachable for the retry window
                before the call, or the connection broke during it.
            EngineError: the engine rejected the stream, or `abort` was
                called (code `CANCELLED`).
        """
        self._wait_until_ready(method)
        created = threading.Event()
        calls: list[Any] = []

        def abort() -> None:
            # The iterator may run in gRPC's thread before `future` returns.
            created.wait()
            calls[0].cancel()

        call = getattr(self._stub, method).future(
            iter(make_requests(abort)), metadata=self._metadata
        )
        calls.append(call)
        created.set()
        try:
            return call.result()
        except self._grpc.FutureCancelledError:
            raise EngineError(method, "CANCELLED", "the upload was aborted") from None
        except self._grpc.RpcError as error:
            raise self._to_engine_error(method, error) from None

    def _wait_until_ready(self, method: str) -> None:
        ready = self._grpc.channel_ready_future(self._channel)
        try:
            ready.result(timeout=self.retry_window)
        except self._grpc.FutureTimeoutError:
            ready.cancel()
            raise EngineUnavailable(
                method,
                "UNAVAILABLE",
                f"could not connect to the engine at {self.address} within {self.retry_window:g} s",
            ) from None

    def _to_engine_error(self, method: str, error: grpc.RpcError) -> EngineError:
        code = error.code()
        name = code.name if code is not None else "UNKNOWN"
        details = error.details() or ""
        if code == self._grpc.StatusCode.UNAVAILABLE:
            return EngineUnavailable(method, name, details)
        return EngineError(method, name, details)


class ResumableStream:
    """A server stream from `EngineClient.resumable_stream`. Iterate it once.
    `cancel()`, from any thread, ends the iteration with `EngineError`
    (code `CANCELLED`)."""

    def __init__(self, client: EngineClient, method: str, request: Any) -> None:
        self._client = client
        self._method = method
        self._request = request
        self._lock = threading.Lock()
        self._call: Any = None
        self._cancelled = False

    def __iter__(self) -> Iterator[Any]:
        client = self._client
        rpc = getattr(client._stub, self._method)
        backoff = _Backoff(self._method, client.retry_window)
        while True:
            with self._lock:
                if self._cancelled:
                    raise EngineError(self._method, "CANCELLED", "the stream was cancelled")
                call = self._call = rpc(self._request, metadata=client._metadata)
            try:
                for message in call:
                    backoff.reset()
                    yield message
                return
            except client._grpc.RpcError as error:
                backoff.wait_or_raise(client._to_engine_error(self._method, error))
            finally:
                # Ends the call when the caller stops early; a no-op once done.
                call.cancel()

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            if self._call is not None:
                self._call.cancel()


class _Backoff:
    """Sleeps between retries of an unreachable engine, until the window ends."""

    def __init__(self, method: str, window: float) -> None:
        self._method = method
        self._window = window
        self.reset()

    def reset(self) -> None:
        self._delay = _FIRST_BACKOFF_SECONDS
        self._give_up_at: float | None = None

    def wait_or_raise(self, error: EngineError) -> None:
        """Sleep before the next attempt if `error` is worth retrying and
        the window allows one, else raise `error`."""
        if not isinstance(error, EngineUnavailable):
            raise error
        now = time.monotonic()
        if self._give_up_at is None:
            self._give_up_at = now + self._window
        remaining = self._give_up_at - now
        if remaining <= 0:
            raise EngineUnavailable(
                error.method,
                error.code,
                f"{error.details} (the engine was unreachable for {self._window:g} s)",
            )
        delay = min(self._delay, remaining)
        log.debug("engine unreachable, retrying %s in %.1f s", self._method, delay)
        time.sleep(delay)
        self._delay = min(self._delay * 2, _MAX_BACKOFF_SECONDS)


_client: EngineClient | None = None


def connect(
    address: str, token: str, retry_window: float = DEFAULT_RETRY_WINDOW_SECONDS
) -> EngineClient:
    """Create the process-wide client that steps, secrets and artifacts use."""
    client = EngineClient(address, token, retry_window)
    set_client(client)
    return client


def set_client(client: EngineClient | None) -> None:
    """Install (or, with None, remove) the process-wide client."""
    global _client
    _client = client


def get_client() -> EngineClient:
    """Return the process-wide client.

    Raises:
        DanubeError: no engine is connected, because the file was run with
            plain `python` rather than by the engine.
    """
    if _client is None:
        raise DanubeError(
            "the danube SDK is not connected to an engine: run the pipeline with `danube run`"
        )
    return _client
