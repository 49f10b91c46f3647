"""Real network servers for the test-suite: static HTTP with byte ranges, moto S3, a GCS emulator.

Everything here listens on ``127.0.0.1`` on a free port and runs in daemon threads of the test
process, so a forgotten ``stop()`` never keeps the interpreter alive. The heavy dependencies
(moto, boto3, the GCS emulator) are imported lazily: tests that only need
:class:`RangeHTTPServer` do not pay for them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.utils
import heapq
import hmac
import html
import json
import logging
import mimetypes
import os
import re
import socket
import socketserver
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple, Protocol, Self
from urllib.parse import quote, unquote, urlencode, urlsplit, urlunsplit

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "Fault",
    "GCSEmulator",
    "HTTPServerFactory",
    "MotoS3Server",
    "RangeHTTPServer",
    "RequestRecord",
    "count_round_trips",
]

LOCALHOST = "127.0.0.1"

Fault = int | Literal["hang"]
"""What :attr:`RangeHTTPServer.faults` maps a path prefix to: an HTTP status, or ``"hang"``."""


# ---------------------------------------------------------------------------------------------
# Static HTTP server
# ---------------------------------------------------------------------------------------------


class RequestRecord(NamedTuple):
    """One request as the server saw it; times are :func:`time.perf_counter` seconds."""

    method: str
    path: str
    start: float
    end: float


def count_round_trips(records: Iterable[RequestRecord]) -> int:
    """Count the sequential round trips ("waves") in a request log.

    A chain is a sequence of requests each of which started no earlier than the previous one
    ended, i.e. it could have depended on the previous answer. The number of round trips is the
    length of the longest chain. Requests that overlap in time are in flight together and count
    once: 1 request -> 1, 10 concurrent requests -> 1, a metadata read followed by 10 concurrent
    chunk reads -> 2, 3 requests one after the other -> 3.

    Parameters
    ----------
    records
        Request log entries, in any order.

    Returns
    -------
    int
        Length of the longest chain; 0 for an empty log.
    """
    ordered = sorted(records, key=lambda r: (r.start, r.end))
    # Heap of (end, chain length) for requests not yet known to have ended before the current one.
    in_flight: list[tuple[float, int]] = []
    best_finished = 0
    longest = 0
    for record in ordered:
        # Starts only grow, so a request that ended before this start ended before all later ones.
        while in_flight and in_flight[0][0] <= record.start:
            best_finished = max(best_finished, heapq.heappop(in_flight)[1])
        length = best_finished + 1
        longest = max(longest, length)
        heapq.heappush(in_flight, (record.end, length))
    return longest


class _Unsatisfiable(Exception):
    """The Range header asks only for bytes past the end of the file."""


_SINGLE_RANGE = re.compile(r"bytes=(\d*)-(\d*)", re.ASCII)


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Return the inclusive span of a single byte range; ``None`` means send the whole file.

    Malformed headers and multi-range requests are ignored, which RFC 9110 allows.
    """
    if not header:
        return None
    match = _SINGLE_RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise _Unsatisfiable
        return max(size - suffix, 0), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        raise _Unsatisfiable
    return start, min(end, size - 1)


class _ThreadingServer(ThreadingHTTPServer):
    daemon_threads = True
    # Concurrent chunk readers open many connections at once; the default backlog of 5 would
    # make the kernel drop SYNs and the clients retry after a whole second.
    request_queue_size = 256

    def __init__(self, owner: RangeHTTPServer) -> None:
        self.owner = owner
        super().__init__((LOCALHOST, 0), _RangeHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn, a reverse-DNS lookup that can take seconds.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = LOCALHOST, self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-response (cancelled reads, timeouts, stop()) are expected.
        if isinstance(sys.exc_info()[1], OSError) or self.owner._stopping.is_set():
            return
        super().handle_error(request, client_address)


class _RangeHandler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps connections alive, as nginx and the cloud stores do; round-trip counts
    # would otherwise include a TCP handshake per request.
    protocol_version = "HTTP/1.1"
    server: _ThreadingServer

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, open_=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, open_=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet; the request log is :attr:`RangeHTTPServer.requests`."""

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    # -- plumbing ---------------------------------------------------------------------------

    def _handle(self) -> None:
        owner = self.server.owner
        self._start: float | None = time.perf_counter()
        try:
            self._respond(owner)
        finally:
            self._log_once()

    def end_headers(self) -> None:
        # Log before the client can see the response end: a client that reads the log right
        # after its request returned must find it, and its next request must start later.
        self._log_once()
        super().end_headers()

    def _log_once(self) -> None:
        start = getattr(self, "_start", None)  # only GET and HEAD are logged
        self._start = None
        if start is not None:
            owner = self.server.owner
            owner._record(RequestRecord(self.command, self.path, start, time.perf_counter()))

    def _send(
        self,
        status: int,
        body: bytes = b"",
        *,
        headers: dict[str, str] | None = None,
        content_type: str = "text/plain; charset=utf-8",
    ) -> None:
        # Unlike send_error this keeps the connection alive: missing chunks are routine (404).
        if not body and status >= 400:
            body = f"{status} {HTTPStatus(status).phrase}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _respond(self, owner: RangeHTTPServer) -> None:
        if owner.latency > 0 and owner._stopping.wait(owner.latency):
            self.close_connection = True
            return
        if not self._authorized(owner):
            return
        raw_path, _, query = self.path.partition("?")
        if not raw_path.startswith("/"):  # absolute-form target, as sent to proxies
            raw_path = urlsplit(raw_path).path or "/"
        url_path = unquote(raw_path)
        fault = owner._fault_for(url_path)
        if fault == "hang":
            # Wait on the stop event, not sleep(): stop() must not wait for the hang to end.
            owner._stopping.wait(owner.hang_seconds)
            self.close_connection = True
            return
        if fault is not None:
            self._send(int(fault))
            return

        target = owner._locate(url_path)
        if target is None:
            self._send(HTTPStatus.NOT_FOUND)
            return
        if target.is_dir():
            if not url_path.endswith("/"):
                # Like nginx: relative links in the listing only resolve below "dir/".
                # One leading slash: "//dir/" would be a scheme-relative URL to host "dir".
                location = "/" + raw_path.lstrip("/") + "/" + (f"?{query}" if query else "")
                self._send(HTTPStatus.MOVED_PERMANENTLY, headers={"Location": location})
                return
            listing = owner._listing(target, url_path).encode()
            self._send(HTTPStatus.OK, listing, content_type="text/html; charset=utf-8")
            return

        encoding = None
        if owner.gzip_encoded and not target.exists():
            gzipped = target.with_name(target.name + ".gz")
            if gzipped.is_file():
                target, encoding = gzipped, "gzip"
        if not target.is_file():
            self._send(HTTPStatus.NOT_FOUND)
            return
        name = target.name[:-3] if encoding else target.name
        self._send_file(target, name, encoding)

    def _send_file(self, path: Path, name: str, encoding: str | None) -> None:
        stat = path.stat()
        size = stat.st_size
        try:
            span = _parse_range(self.headers.get("Range"), size)
        except _Unsatisfiable:
            self._send(
                HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                headers={"Content-Range": f"bytes */{size}"},
            )
            return
        start, end = span if span is not None else (0, size - 1)
        length = end - start + 1
        self.send_response(HTTPStatus.PARTIAL_CONTENT if span is not None else HTTPStatus.OK)
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Last-Modified", email.utils.formatdate(stat.st_mtime, usegmt=True))
        self.send_header("ETag", f'"{stat.st_mtime_ns:x}-{size:x}"')
        if encoding:
            self.send_header("Content-Encoding", encoding)
        if span is not None:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if self.command == "HEAD" or length <= 0:
            return
        with path.open("rb") as fh:
            fh.seek(start)
            remaining = length
            while remaining > 0:
                block = fh.read(min(remaining, 1 << 20))
                if not block:
                    break
                self.wfile.write(block)
                remaining -= len(block)

    def _authorized(self, owner: RangeHTTPServer) -> bool:
        scheme, _, credentials = self.headers.get("Authorization", "").partition(" ")
        scheme, credentials = scheme.lower(), credentials.strip()
        if owner.basic_auth is not None:
            user, password = owner.basic_auth
            try:
                given = base64.b64decode(credentials, validate=True)
            except binascii.Error:
                given = b""
            # compare_digest only takes ASCII str; compare UTF-8 bytes instead.
            if scheme == "basic" and hmac.compare_digest(given, f"{user}:{password}".encode()):
                return True
            self._send(
                HTTPStatus.UNAUTHORIZED,
                headers={"WWW-Authenticate": 'Basic realm="wkjupyter-test", charset="UTF-8"'},
            )
            return False
        if owner.bearer_token is not None:
            if scheme != "bearer" or not credentials:
                self._send(
                    HTTPStatus.UNAUTHORIZED,
                    headers={"WWW-Authenticate": 'Bearer realm="wkjupyter-test"'},
                )
                return False
            if not hmac.compare_digest(credentials.encode(), owner.bearer_token.encode()):
                self._send(HTTPStatus.FORBIDDEN)
                return False
        return True


class RangeHTTPServer:
    """A static file server with byte ranges, auth, latency and fault injection.

    Serves ``root`` over HTTP/1.1 (keep-alive) at :attr:`url`: ``GET``/``HEAD`` with
    ``Content-Length``, single ``Range`` requests (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``)
    answered with 206, unsatisfiable ranges with 416, multi-range requests with the whole file
    (200). A directory URL without a trailing slash redirects (301) to the one with it, which
    returns an nginx-autoindex style HTML listing (subdirectories end in ``/``) that fsspec's
    ``HTTPFileSystem.ls`` understands. Anything missing, or outside ``root``, is 404.

    Parameters
    ----------
    root
        Directory to serve.
    latency
        Seconds to wait before answering every request (simulates a far-away server).
    basic_auth
        ``(user, password)``: requests must carry matching Basic credentials, else 401 with a
        ``WWW-Authenticate`` challenge.
    bearer_token
        Requests must carry ``Authorization: Bearer <token>``: missing -> 401, wrong -> 403.
    gzip_encoded
        When ``X`` does not exist but ``X.gz`` does, serve the bytes of ``X.gz`` as ``X`` with
        ``Content-Encoding: gzip`` and list it as ``X``, as cloud storage serves the chunks that
        cloud-volume writes. Ranges then address the stored (compressed) bytes.
    hang_seconds
        How long a ``"hang"`` fault keeps the request open (longer than any client timeout);
        :meth:`stop` releases it early.

    Attributes
    ----------
    faults : dict[str, Fault]
        Path prefix (decoded URL path, e.g. ``"/data/s0"``) -> HTTP status to answer instead, or
        ``"hang"`` to never answer. The longest matching prefix wins; may be changed while
        running. Checked after authentication.
    latency, basic_auth, bearer_token, gzip_encoded, hang_seconds
        As the parameters; read on every request, so tests may change them while running.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        latency: float = 0.0,
        basic_auth: tuple[str, str] | None = None,
        bearer_token: str | None = None,
        gzip_encoded: bool = False,
        hang_seconds: float = 60.0,
    ) -> None:
        if basic_auth is not None and bearer_token is not None:
            raise ValueError("give basic_auth or bearer_token, not both")
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise NotADirectoryError(self.root)
        self.latency = latency
        self.basic_auth = basic_auth
        self.bearer_token = bearer_token
        self.gzip_encoded = gzip_encoded
        self.hang_seconds = hang_seconds
        self.faults: dict[str, Fault] = {}
        self._log: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd: _ThreadingServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind a free port and serve in a daemon thread; returns ``self``."""
        if self._httpd is not None:
            raise RuntimeError("server already started")
        self._stopping.clear()
        self._httpd = _ThreadingServer(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"RangeHTTPServer:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, release hanging requests and close open connections. Idempotent."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        # Idle keep-alive connections would otherwise leave handler threads blocked in recv().
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> Self:
        return self if self._httpd is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound TCP port."""
        if self._httpd is None:
            raise RuntimeError("server not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL without trailing slash, e.g. ``http://127.0.0.1:43123``."""
        return f"http://{LOCALHOST}:{self.port}"

    def url_for(self, relpath: str | os.PathLike[str] = "") -> str:
        """URL of ``relpath`` (relative to :attr:`root`, ``/``-separated), percent-encoded."""
        rel = Path(relpath).as_posix()
        return f"{self.url}/{quote('' if rel == '.' else rel.lstrip('/'))}"

    # -- request log -------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of the request log: ``(method, path, start, end)`` per request.

        ``path`` is the request target as sent (percent-encoded, with any query string);
        ``start``/``end`` are :func:`time.perf_counter` values taken when the request line was
        read and when the response was written. Only ``GET`` and ``HEAD`` are logged.
        """
        with self._lock:
            return list(self._log)

    def reset_log(self) -> None:
        """Forget all logged requests."""
        with self._lock:
            self._log.clear()

    def round_trips(self) -> int:
        """Sequential round trips in the log; see :func:`count_round_trips`."""
        return count_round_trips(self.requests)

    # -- used by the handler -----------------------------------------------------------------

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._log.append(record)

    def _track(self, conn: socket.socket, *, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _fault_for(self, url_path: str) -> Fault | None:
        # Copy: tests may edit the dict while handler threads read it.
        matches = [p for p in list(self.faults) if url_path.startswith(p)]
        if not matches:
            return None
        fault = self.faults.get(max(matches, key=len))
        if fault is not None and fault != "hang" and not isinstance(fault, int):
            raise ValueError(f"fault must be an HTTP status or 'hang', not {fault!r}")
        return fault

    def _locate(self, url_path: str) -> Path | None:
        parts = [p for p in url_path.split("/") if p not in ("", ".")]
        if any(p == ".." or "\\" in p or "\0" in p for p in parts):
            return None
        return self.root.joinpath(*parts)

    def _listing(self, directory: Path, url_path: str) -> str:
        entries = sorted(directory.iterdir(), key=lambda p: (not p.is_dir(), p.name))
        names = []
        for entry in entries:
            if entry.is_dir():
                names.append(entry.name + "/")
            elif self.gzip_encoded and entry.name.endswith(".gz"):
                # The object's name on cloud storage is the one without ".gz".
                plain = entry.name[:-3]
                names.append(entry.name if (directory / plain).exists() else plain)
            else:
                names.append(entry.name)
        title = html.escape(f"Index of {url_path}")
        links = ['<a href="../">../</a>'] if url_path != "/" else []
        links += [f'<a href="{quote(n)}">{html.escape(n)}</a>' for n in names]
        body = "\n".join(links)
        return (
            f"<html>\n<head><title>{title}</title></head>\n<body>\n<h1>{title}</h1><hr><pre>"
            f"{body}\n</pre><hr></body>\n</html>\n"
        )


class HTTPServerFactory(Protocol):
    """Signature of the ``http_server`` fixture: start a :class:`RangeHTTPServer` on ``root``."""

    def __call__(self, root: str | os.PathLike[str], **options: Any) -> RangeHTTPServer: ...


# ---------------------------------------------------------------------------------------------
# Shared helpers for the object stores
# ---------------------------------------------------------------------------------------------


def _tree_files(local_dir: str | os.PathLike[str], prefix: str) -> list[tuple[Path, str]]:
    """Files below ``local_dir`` with their object keys under ``prefix``, in sorted order."""
    base = Path(local_dir)
    if not base.is_dir():
        raise NotADirectoryError(base)
    head = prefix.strip("/")
    return [
        (path, f"{head}/{rel}" if head else rel)
        for path in sorted(base.rglob("*"))
        if path.is_file()
        for rel in [path.relative_to(base).as_posix()]
    ]


def _unique_bucket_name(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:12]}"


# ---------------------------------------------------------------------------------------------
# S3: moto in server mode with IAM authentication
# ---------------------------------------------------------------------------------------------


def _sigv4_canonical_target(target: str) -> str:
    """Percent-encode a request path and query the way SigV4 clients sign them."""
    parts = urlsplit(target)
    path = quote(unquote(parts.path), safe="/~")
    pairs = []
    for item in parts.query.split("&") if parts.query else []:
        key, sep, value = item.partition("=")
        pairs.append(f"{quote(unquote(key), safe='-_.~')}{sep}{quote(unquote(value), safe='-_.~')}")
    return urlunsplit(("", "", path, "&".join(pairs), ""))


def _fix_moto_server_auth() -> None:
    """Fix two bugs of moto 5's IAM authentication that real S3 does not have.

    1. In server mode moto re-derives the signed URL from werkzeug's ``request.url``, an IRI in
       which ``%2F``, ``%3A``, ``%40``, ``%2C``... are decoded again; botocore then canonicalises
       ``prefix=a/`` where the client signed ``prefix=a%2F``. Every request whose query or key
       holds such a character fails with SignatureDoesNotMatch - including each s3fs ``ls``
       (``delimiter=/``). Upstream: getmoto/moto#5948 (open), fix proposed in #5949. Re-encoding
       is idempotent for URLs that are already encoded, as in-process ``mock_aws`` passes them.
    2. A request without an ``Authorization`` header raises KeyError inside moto: a 500 that
       clients retry for seconds. S3 answers 403 AccessDenied.
    """
    from moto.iam import access_control
    from moto.s3.exceptions import BucketAccessDeniedError, S3AccessDeniedError

    base = access_control.IAMRequestBase
    if getattr(base, "_wkjupyter_fixed", False):
        return
    original_request = base._create_aws_request
    s3_request = access_control.S3IAMRequest
    original_init = s3_request.__init__

    def create_aws_request(self: Any) -> Any:
        self._path = _sigv4_canonical_target(self._path)
        return original_request(self)

    def s3_init(
        self: Any,
        account_id: str,
        method: str,
        path: str,
        data: dict[str, str],
        body: bytes,
        headers: dict[str, str],
        action: str,
    ) -> None:
        if "Authorization" not in headers:
            if "BucketName" in data:
                raise BucketAccessDeniedError(bucket=data["BucketName"])
            raise S3AccessDeniedError
        original_init(self, account_id, method, path, data, body, headers, action)

    base._create_aws_request = create_aws_request  # type: ignore[method-assign]
    s3_request.__init__ = s3_init  # type: ignore[method-assign]
    base._wkjupyter_fixed = True  # type: ignore[attr-defined]


def _policy(actions: Sequence[str], resource: str) -> str:
    statement = {"Effect": "Allow", "Action": list(actions), "Resource": resource}
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


class MotoS3Server:
    """moto's S3 (and IAM) server on localhost that refuses unsigned or wrongly signed requests.

    Authentication: moto checks SigV4 signatures and IAM policies once its
    ``INITIAL_NO_AUTH_ACTION_COUNT`` is exhausted. ``start()`` creates an administrator and the
    S3 user behind :attr:`key_id`/:attr:`secret` while checks are still off, then switches them
    on through moto's ``POST /moto-api/reset-auth`` endpoint (count 0); ``stop()`` restores the
    previous value and wipes moto's state. From then on only keys created through
    :meth:`create_s3_user` work; a wrong secret gets SignatureDoesNotMatch (403), an unknown key
    InvalidAccessKeyId (403), an anonymous request AccessDenied (403). moto cannot check
    query-string signatures, so presigned URLs are refused (403) too.

    moto's backends and that switch are process-wide (the server runs in this process), so only
    one instance may run at a time, and ``mock_aws`` must not be used while it runs.

    Parameters
    ----------
    region
        Region the clients sign for.
    """

    _running: ClassVar[bool] = False
    _running_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, *, region: str = "us-east-1") -> None:
        self.region = region
        self.endpoint_url = ""
        self.key_id = ""
        self.secret = ""
        self._admin: tuple[str, str] = ("", "")
        self._server: Any = None
        self._holds_slot = False
        self._previous_auth_count: str | None = None

    def start(self) -> Self:
        """Start the server, create the users and switch authentication on; returns ``self``."""
        from moto.server import ThreadedMotoServer

        with MotoS3Server._running_lock:
            if MotoS3Server._running:
                raise RuntimeError("one MotoS3Server per process: moto's state is global")
            MotoS3Server._running = self._holds_slot = True
        try:
            _fix_moto_server_auth()
            werkzeug_log = logging.getLogger("werkzeug")
            if werkzeug_log.level == logging.NOTSET:
                # werkzeug would otherwise attach a stderr handler for its access log.
                werkzeug_log.setLevel(logging.WARNING)
            self._server = ThreadedMotoServer(ip_address=LOCALHOST, port=0, verbose=False)
            self._server.start()
            host, port = self._server.get_host_and_port()
            self.endpoint_url = f"http://{host}:{port}"
            # Auth is still off: the administrator can be created without a key.
            self._admin = self._create_user(None, ("*",), "*", name="wkjupyter-admin")
            self.key_id, self.secret = self.create_s3_user("wkjupyter-test")
            self._previous_auth_count = self._reset_auth("0")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Switch authentication back, wipe moto's state and stop the server. Idempotent."""
        server, self._server = self._server, None
        previous, self._previous_auth_count = self._previous_auth_count, None
        try:
            if server is not None:
                with contextlib.suppress(OSError):
                    if previous is not None:
                        self._reset_auth(previous)
                    reset = f"{self.endpoint_url}/moto-api/reset"
                    urllib.request.urlopen(
                        urllib.request.Request(reset, method="POST"), timeout=10
                    ).close()
                server.stop()
        finally:
            if self._holds_slot:
                with MotoS3Server._running_lock:
                    MotoS3Server._running = self._holds_slot = False

    def __enter__(self) -> Self:
        return self if self._server is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _reset_auth(self, count: str) -> str:
        # Not form-encoded (urllib's default): flask would parse it and moto would see no data.
        request = urllib.request.Request(
            f"{self.endpoint_url}/moto-api/reset-auth",
            data=count.encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(json.load(response)["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"])

    # -- clients -----------------------------------------------------------------------------

    def client(
        self, service: str = "s3", *, key_id: str | None = None, secret: str | None = None
    ) -> Any:
        """A boto3 client for ``service`` on this server, signed with the test key by default."""
        import boto3
        from botocore.config import Config

        # A fresh session: the default one would pick up AWS_PROFILE and ~/.aws settings.
        return boto3.session.Session().client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=key_id or self.key_id,
            aws_secret_access_key=secret or self.secret,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs keyword arguments for the test key: ``s3fs.S3FileSystem(**opts)``."""
        return {
            "key": self.key_id,
            "secret": self.secret,
            "client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": self.region},
        }

    # -- setup helpers -----------------------------------------------------------------------

    def create_s3_user(
        self,
        name: str | None = None,
        *,
        actions: Sequence[str] = ("s3:*",),
        resource: str = "*",
    ) -> tuple[str, str]:
        """Create an IAM user allowed ``actions`` on ``resource``, with a fresh access key.

        Parameters
        ----------
        name
            User name; a unique one by default.
        actions
            IAM actions of the user's inline policy; full S3 access by default.
        resource
            Resource ARN pattern of the policy.

        Returns
        -------
        tuple[str, str]
            ``(access_key_id, secret_access_key)``.
        """
        return self._create_user(self._admin, actions, resource, name=name)

    def _create_user(
        self,
        signer: tuple[str, str] | None,
        actions: Sequence[str],
        resource: str,
        *,
        name: str | None,
    ) -> tuple[str, str]:
        # Before auth is switched on any key is accepted, so a placeholder signs the bootstrap.
        key_id, secret = signer or ("bootstrap", "bootstrap")
        iam = self.client("iam", key_id=key_id, secret=secret)
        user = name or f"user-{uuid.uuid4().hex[:8]}"
        iam.create_user(UserName=user)
        iam.put_user_policy(
            UserName=user, PolicyName="access", PolicyDocument=_policy(actions, resource)
        )
        key = iam.create_access_key(UserName=user)["AccessKey"]
        return str(key["AccessKeyId"]), str(key["SecretAccessKey"])

    def make_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a unique name by default) and return its name."""
        bucket = name or _unique_bucket_name("test")
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def upload_tree(
        self, local_dir: str | os.PathLike[str], bucket: str, prefix: str = ""
    ) -> list[str]:
        """Upload every file below ``local_dir`` to ``s3://bucket/prefix/<relative path>``.

        Returns
        -------
        list[str]
            The object keys written, sorted.
        """
        s3 = self.client()
        files = _tree_files(local_dir, prefix)

        def put(item: tuple[Path, str]) -> str:
            path, key = item
            s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
            return key

        # boto3 clients are thread-safe; moto's server is threaded.
        with ThreadPoolExecutor(max_workers=16) as pool:
            return list(pool.map(put, files))


# ---------------------------------------------------------------------------------------------
# GCS: gcp-storage-emulator
# ---------------------------------------------------------------------------------------------


class _EmulatorHTTPServer(HTTPServer):
    # The emulator's storage is not thread-safe, so requests stay serial (as in the emulator's
    # own Server), but a deep backlog keeps concurrent clients from waiting on SYN retries.
    request_queue_size = 256

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # skip the reverse-DNS lookup in getfqdn
        self.server_name, self.server_port = LOCALHOST, self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class GCSEmulator:
    """An in-memory Google Cloud Storage JSON-API emulator on localhost.

    Wraps ``gcp_storage_emulator``'s storage and request handler in our own server thread (its
    ``create_server`` hides the bound port and uses a non-daemon thread and a backlog of 5).
    The emulator does not check credentials at all: use ``token="anon"``.

    Parameters
    ----------
    project
        Project the buckets are created in.

    Notes
    -----
    gcsfs >= 2025 makes ``gcsfs.GCSFileSystem`` the ``ExtendedGcsFileSystem`` (unless the
    environment variable ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT`` is false when gcsfs is first
    imported). It asks the Storage Control gRPC API for each bucket's layout, retrying for 60 s
    per operation; the emulator has no gRPC API. :attr:`storage_options` therefore sets
    ``retry_timeout=0`` so the lookup fails at once and gcsfs falls back to the JSON API (it
    logs a warning "Could not determine bucket type" each time).
    """

    def __init__(self, *, project: str = "wkjupyter-test") -> None:
        self.project = project
        self.endpoint_url = ""
        self._httpd: HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Start the emulator in a daemon thread; returns ``self``."""
        from gcp_storage_emulator.server import RequestHandler
        from gcp_storage_emulator.storage import Storage

        if self._httpd is not None:
            raise RuntimeError("emulator already started")
        storage = Storage(use_memory_fs=True)
        self._httpd = _EmulatorHTTPServer((LOCALHOST, 0), partial(RequestHandler, storage))
        self.endpoint_url = f"http://{LOCALHOST}:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="GCSEmulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the emulator; its in-memory data is gone. Idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self if self._httpd is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def storage_options(self) -> dict[str, Any]:
        """gcsfs keyword arguments: ``gcsfs.GCSFileSystem(**opts)``; see the class notes."""
        return {
            "endpoint_url": self.endpoint_url,
            "token": "anon",
            "project": self.project,
            "retry_timeout": 0.0,
        }

    def _call(self, method: str, path: str, query: dict[str, str], body: bytes, ctype: str) -> Any:
        url = f"{self.endpoint_url}{path}?{urlencode(query)}"
        request = urllib.request.Request(
            url, data=body, method=method, headers={"Content-Type": ctype}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def make_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a unique name by default) and return its name."""
        bucket = name or _unique_bucket_name("test")
        body = json.dumps({"name": bucket}).encode()
        self._call("POST", "/storage/v1/b", {"project": self.project}, body, "application/json")
        return bucket

    def upload_tree(
        self, local_dir: str | os.PathLike[str], bucket: str, prefix: str = ""
    ) -> list[str]:
        """Upload every file below ``local_dir`` to ``gs://bucket/prefix/<relative path>``.

        Returns
        -------
        list[str]
            The object names written, sorted.
        """
        path = f"/upload/storage/v1/b/{quote(bucket, safe='')}/o"
        keys = []
        for file, key in _tree_files(local_dir, prefix):
            data = file.read_bytes()
            if data:
                query = {"uploadType": "media", "name": key}
                self._call("POST", path, query, data, "application/octet-stream")
            else:
                # The emulator's media upload crashes on an empty body; multipart copes.
                body = (
                    b"--b\r\nContent-Type: application/json\r\n\r\n"
                    + json.dumps({"name": key}).encode()
                    + b"\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n\r\n--b--\r\n"
                )
                query = {"uploadType": "multipart"}
                self._call("POST", path, query, body, "multipart/related; boundary=b")
            keys.append(key)
        return keys
