"""HTTP limits of ``wkjupyter serve``: timeouts, sizes and a connection cap, answered as nginx does.

Tornado's own defaults suit a trusted network: a connection sending its headers one byte a
minute stays open for an hour (``idle_connection_timeout`` 3600 s), a header block over
``max_header_size`` (request line included) is dropped without a status, and nothing caps the
number of connections. :func:`limited_server` builds a tornado ``HTTPServer`` that

- closes a connection that has not sent a whole request head within ``header_timeout`` of the
  server starting to wait for it (tornado's ``idle_connection_timeout``: in
  ``HTTP1Connection._read_message_inner`` it bounds the read of the request line and headers,
  so it is both the header timeout and the keep-alive idle timeout), and one whose body takes
  longer than ``body_timeout``;
- answers ``414 URI Too Long`` to a request line over ``max_request_line`` bytes and ``431
  Request Header Fields Too Large`` to a head over ``max_header_size`` (RFC 9110 §15.5.15,
  RFC 6585 §5), then closes;
- answers ``413 Content Too Large`` to a ``Content-Length`` over ``max_body_size`` before
  reading the body (a chunked body that grows too large gets tornado's 400);
- answers ``503`` (``Retry-After``) to connections beyond ``max_connections`` and closes them.

The Jupyter extension runs inside Jupyter's own HTTP server, which is not ours to change: there
``ServerApp.max_body_size`` and ``ServerApp.max_buffer_size`` apply, and header timeouts and
connection caps belong to the proxy in front of it (README, "Serving as OME-Zarr").
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from tornado import gen
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamClosedError

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from tornado import web

__all__ = ["HttpLimits", "LimitedHTTPServer", "limited_server"]

log = logging.getLogger("wkjupyter.server")

#: How long a refused connection is read (and the bytes discarded) before it is closed.
LINGER_SECONDS = 2.0

_CONTENT_LENGTH = re.compile(rb"\ncontent-length:[ \t]*([0-9]{1,19})[ \t]*\r?\n", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Timeouts and sizes ``wkjupyter serve`` enforces per connection.

    Attributes
    ----------
    header_timeout
        Seconds a client has to send a whole request line and headers, counted from when the
        server starts waiting; also how long an idle keep-alive connection stays open.
    body_timeout
        Seconds a client has to send a request body.
    max_request_line
        Longest request line (method, path and query), in bytes; longer gets 414.
    max_header_size
        Largest request head (request line and headers), in bytes; larger gets 431.
    max_body_size
        Largest request body (REST requests are small JSON documents), in bytes; a larger
        ``Content-Length`` gets 413.
    max_connections
        Open connections served at once; more get 503 and are closed.
    """

    header_timeout: float = 60.0
    body_timeout: float = 60.0
    max_request_line: int = 16 * 1024
    max_header_size: int = 64 * 1024
    max_body_size: int = 1024 * 1024
    max_connections: int = 1000

    def __post_init__(self) -> None:
        for name in self.__slots__:
            if not getattr(self, name) > 0:
                msg = f"HttpLimits.{name} must be positive, not {getattr(self, name)!r}"
                raise ValueError(msg)
        if self.max_request_line > self.max_header_size:
            msg = (
                f"HttpLimits.max_request_line ({self.max_request_line}) cannot exceed "
                f"max_header_size ({self.max_header_size}): the request line is part of the head"
            )
            raise ValueError(msg)


class LimitedHTTPServer(HTTPServer):
    """A tornado ``HTTPServer`` enforcing :class:`HttpLimits` (build it with
    :func:`limited_server`)."""

    limits: HttpLimits
    _open = 0  # connections being served
    _refusing = 0  # refused connections still draining
    _refused = 0  # since the last warning
    _warned_at = float("-inf")

    def handle_stream(self, stream: IOStream, address: tuple[Any, ...]) -> None:
        if self._open >= self.limits.max_connections:
            self._refuse_connection(stream)
            return
        self._open += 1
        if type(stream) is IOStream:  # TLS streams keep tornado's behaviour (no status)
            stream = _HeadLimitedStream(
                stream.socket,
                self.limits,
                max_buffer_size=self.max_buffer_size,
                read_chunk_size=self.read_chunk_size,
            )
        super().handle_stream(stream, address)

    def on_close(self, server_conn: object) -> None:
        self._open -= 1
        super().on_close(server_conn)

    def _refuse_connection(self, stream: IOStream) -> None:
        self._refused += 1
        now = IOLoop.current().time()
        if now - self._warned_at >= 60:  # not once per connection
            log.warning(
                "%d connections open (the limit, --max-connections): answered 503 to %d new "
                "ones since the last such warning",
                self._open, self._refused,
            )  # fmt: skip
            self._warned_at, self._refused = now, 0
        if self._refusing >= self.limits.max_connections:  # a flood: not even an answer
            stream.close()
            return
        self._refusing += 1

        async def refuse() -> None:
            try:
                await answer_and_close(
                    stream, 503, "Service Unavailable",
                    "too many connections to this server; retry shortly",
                    ("Retry-After: 1",),
                )  # fmt: skip
            finally:
                self._refusing -= 1

        IOLoop.current().spawn_callback(refuse)


def limited_server(app: web.Application, limits: HttpLimits | None = None) -> LimitedHTTPServer:
    """A tornado ``HTTPServer`` for ``app`` enforcing ``limits`` (default :class:`HttpLimits`)."""
    limits = limits or HttpLimits()
    server = LimitedHTTPServer(
        app,
        idle_connection_timeout=limits.header_timeout,
        body_timeout=limits.body_timeout,
        max_header_size=limits.max_header_size,
        max_body_size=limits.max_body_size,
    )
    server.limits = limits
    return server


class _HeadLimitedStream(IOStream):
    """An ``IOStream`` whose read of a request head answers 414/431 when it is too long.

    ``HTTP1Connection`` reads a request head with ``read_until_regex(..., max_bytes=...)``,
    and tornado's stream closes the socket as soon as ``max_bytes`` is passed. Here that read
    is bounded by the pattern instead (the head, or ``max_header_size + 1`` bytes of it), so
    the connection is still open to carry the answer.
    """

    def __init__(self, sock: socket.socket, limits: HttpLimits, **kwargs: Any) -> None:
        super().__init__(sock, **kwargs)
        self._limits = limits
        # The first blank line, or more bytes than a head may have: never more is buffered.
        self._head = rb"\A(?:[\s\S]*?\r?\n\r?\n|[\s\S]{%d})" % (limits.max_header_size + 1)

    def read_until_regex(self, regex: bytes, max_bytes: int | None = None) -> Awaitable[bytes]:
        if max_bytes is None:  # not a request head (HTTP1Connection always bounds those)
            return super().read_until_regex(regex, max_bytes)
        # A plain future, checked in a callback: a coroutine here would become one more task
        # per request (tornado wraps the head read in gen.with_timeout), a cost every chunk
        # request pays (bench/serve.py).
        head_read = cast("asyncio.Future[bytes]", super().read_until_regex(self._head))
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        def check(done: asyncio.Future[bytes]) -> None:
            if answer.done():
                return
            if done.cancelled():
                answer.cancel()
            elif (err := done.exception()) is not None:
                answer.set_exception(err)
            elif (refusal := self._refusal(done.result())) is None:
                answer.set_result(done.result())
            else:
                refused = asyncio.ensure_future(answer_and_close(self, *refusal))
                refused.add_done_callback(closed)

        def closed(_: asyncio.Future[None]) -> None:
            if not answer.done():  # HTTP1ServerConnection then ends the connection quietly
                answer.set_exception(StreamClosedError())

        head_read.add_done_callback(check)
        return answer

    def _refusal(self, head: bytes) -> tuple[int, str, str] | None:
        """The status, reason and message that refuse ``head``; ``None`` if it is within
        the limits."""
        line_end = head.find(b"\n")
        line = len(head) if line_end < 0 else line_end
        limits = self._limits
        if line > limits.max_request_line or len(head) > limits.max_header_size:
            # Not the request line itself: it may hold secrets.
            log.info("request head too large from %s (%d bytes read)", _peer(self), len(head))
        if line > limits.max_request_line:
            message = f"the request line is longer than {limits.max_request_line} bytes"
            return 414, "URI Too Long", message
        if len(head) > limits.max_header_size:
            message = f"the request headers are larger than {limits.max_header_size} bytes"
            return 431, "Request Header Fields Too Large", message
        if (length := _content_length(head)) > limits.max_body_size:
            # Before the body is read (tornado would read it, then drop the connection).
            log.info("request body of %d bytes refused from %s", length, _peer(self))
            message = f"the request body is larger than {limits.max_body_size} bytes"
            return 413, "Content Too Large", message
        return None


async def answer_and_close(
    stream: IOStream, status: int, reason: str, message: str, headers: tuple[str, ...] = ()
) -> None:
    """Send an answer shaped as the REST API's errors (``{"error", "message"}``), then close
    ``stream`` gracefully.

    RFC 9112 §9.6: closing a socket that still holds unread request bytes sends a reset,
    which can destroy the answer before the client reads it; so the server half-closes,
    reads and discards what the client is still sending for at most ``LINGER_SECONDS`` (as
    nginx's ``lingering_close``) and only then closes.
    """
    error = {"error": reason.replace(" ", ""), "message": message}
    body = json.dumps(error).encode()
    head = "".join(
        f"{line}\r\n"
        for line in (
            f"HTTP/1.1 {status} {reason}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Access-Control-Allow-Origin: *",
            *headers,
            "Connection: close",
            "",
        )
    )
    try:
        await stream.write(head.encode() + body)
        stream.socket.shutdown(socket.SHUT_WR)
        await gen.with_timeout(
            timedelta(seconds=LINGER_SECONDS), _drain(stream), quiet_exceptions=StreamClosedError
        )
    except (StreamClosedError, OSError, TimeoutError):
        pass
    finally:
        stream.close()


async def _drain(stream: IOStream) -> None:
    while True:  # until the client closes (StreamClosedError) or the linger time is over
        await stream.read_bytes(64 * 1024, partial=True)


def _content_length(head: bytes) -> int:
    """The head's Content-Length, 0 if it has none (tornado validates it)."""
    found = _CONTENT_LENGTH.search(head)
    return int(found.group(1)) if found else 0


def _peer(stream: IOStream) -> str:
    try:
        return str(stream.socket.getpeername()[0])
    except (OSError, AttributeError):
        return "?"
