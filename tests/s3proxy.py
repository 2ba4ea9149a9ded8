"""An S3 fault and latency proxy for tests and benchmarks (DESIGN §6: a local emulator answers in
microseconds, real S3 in tens of milliseconds, and real S3 throttles and resets).

``S3Proxy`` listens on ``127.0.0.1:<free port>`` in front of an S3 endpoint (moto, s3rver) and
forwards every request unchanged, streaming bodies both ways. On the way it can

- add a fixed latency per request (``latency_s``), so request counts turn into wall time;
- count requests by S3 operation (``GetObject``, ``UploadPart``, ``ListObjectsV2``, ...);
- answer matching requests itself with an S3 error (``fail_next``), or reset the connection
  before answering or in the middle of the response body (``drop_next``).

Usage::

    with S3Proxy(moto_url, latency_s=0.02) as proxy:
        client = boto3.client("s3", endpoint_url=proxy.url, ...)
        proxy.fail_next(2, status=503, code="SlowDown", when=on("GetObject", key="a.csv"))
        ...
        assert proxy.counts()["GetObject"] == 3

Design choices:

- **Host header**: forwarded as the client sent it (the proxy's ``127.0.0.1:<port>``). SigV4
  signs the ``Host`` header, so an upstream that checks signatures (s3rver's fork) validates
  them against the host the client signed for; presigned URLs minted through the proxy keep
  working through the proxy. Both emulators treat an IP host as path-style addressing, so the
  bucket is the first path segment either way. ``rewrite_host=True`` sends the upstream's
  ``host:port`` instead (only for upstreams that route by host and do not check signatures).
- **Bodies** are streamed, never buffered: a ``Content-Length`` body is copied in 64 KiB
  pieces, a ``Transfer-Encoding: chunked`` body is forwarded with its chunk framing byte for
  byte (trailers included), and ``Content-Encoding: aws-chunked`` is just bytes under a
  ``Content-Length``. Responses are copied with the upstream's ``Content-Length``, or re-chunked
  when the upstream sent them chunked (the bytes of the body are unchanged).
- **Expect: 100-continue** (boto3 sends it on PutObject and UploadPart): the proxy answers
  ``100 Continue`` itself only when it forwards the request; an injected error is sent instead
  of ``100 Continue``, as S3 does, and that connection is then closed.
- **Keep-alive**: HTTP/1.1 on both sides. One upstream connection per client connection,
  reopened when the upstream closed it (after an answer, as moto's server does, or while idle:
  the check urllib3 does on its pools). A client's connection stays open whatever the
  upstream does, as S3's do: clients pay for a new connection only where S3 would make them.
- Only path-style requests are classified (what the project uses with a custom endpoint).
"""

from __future__ import annotations

import contextlib
import http.client
import select
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

CHUNK = 64 * 1024
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authenticate",
                        "proxy-authorization", "te", "trailer", "upgrade", "expect"})
DEFAULT_MESSAGES = {
    "SlowDown": "Please reduce your request rate.",
    "AccessDenied": "Access Denied",
    "InternalError": "We encountered an internal error. Please try again.",
    "ServiceUnavailable": "Service is unable to handle request.",
    "NoSuchKey": "The specified key does not exist.",
}


@dataclass(frozen=True)
class S3Request:
    """One request as the proxy saw it (what a fault predicate is asked about)."""

    method: str
    path: str
    """The URL path, percent-decoded, without the query string."""
    query: dict[str, list[str]]
    """The query string, as ``urllib.parse.parse_qs`` gives it (blank values kept)."""
    headers: Message = field(repr=False)
    """The request headers (case-insensitive lookup: ``headers.get("x-amz-copy-source")``)."""

    @property
    def bucket(self) -> str:
        return self.path.lstrip("/").partition("/")[0]

    @property
    def key(self) -> str:
        return self.path.lstrip("/").partition("/")[2]

    @property
    def operation(self) -> str:
        return classify(self.method, self.path, self.query, self.headers)


Predicate = Callable[[S3Request], bool]


def on(operation: str | None = None, *, method: str | None = None, key: str | None = None,
       key_suffix: str | None = None, bucket: str | None = None) -> Predicate:
    """A predicate for ``fail_next``/``drop_next``: every given criterion must hold."""

    def match(request: S3Request) -> bool:
        return ((operation is None or request.operation == operation)
                and (method is None or request.method == method.upper())
                and (key is None or request.key == key)
                and (key_suffix is None or request.key.endswith(key_suffix))
                and (bucket is None or request.bucket == bucket))

    return match


def classify(method: str, path: str, query: dict[str, list[str]], headers: Message) -> str:
    """The S3 operation of a path-style request (boto3's names), or ``Other``."""
    bucket, _, key = path.lstrip("/").partition("/")
    copy = headers.get("x-amz-copy-source") is not None
    if not bucket:
        return "ListBuckets" if method == "GET" else "Other"
    if not key:
        if method == "GET":
            if query.get("list-type") == ["2"]:
                return "ListObjectsV2"
            for sub, name in (("uploads", "ListMultipartUploads"),
                              ("versions", "ListObjectVersions"),
                              ("location", "GetBucketLocation")):
                if sub in query:
                    return name
            sub = _subresource(query)
            return f"GetBucket{sub}" if sub else "ListObjects"
        if method == "HEAD":
            return "HeadBucket"
        if method == "POST" and "delete" in query:
            return "DeleteObjects"
        if method == "PUT":
            sub = _subresource(query)
            return f"PutBucket{sub}" if sub else "CreateBucket"
        if method == "DELETE":
            sub = _subresource(query)
            return f"DeleteBucket{sub}" if sub else "DeleteBucket"
        return "Other"
    if method == "GET":
        if "uploadId" in query:
            return "ListParts"
        return "GetObjectTagging" if "tagging" in query else "GetObject"
    if method == "HEAD":
        return "HeadObject"
    if method == "PUT":
        if "partNumber" in query and "uploadId" in query:
            return "UploadPartCopy" if copy else "UploadPart"
        if copy:
            return "CopyObject"
        return "PutObjectTagging" if "tagging" in query else "PutObject"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
        return "Other"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    return "Other"


BUCKET_SUBRESOURCES = {
    "acl": "Acl", "cors": "Cors", "encryption": "Encryption", "lifecycle": "Lifecycle",
    "policy": "Policy", "tagging": "Tagging", "versioning": "Versioning", "website": "Website",
    "object-lock": "ObjectLock", "ownershipControls": "OwnershipControls",
    "publicAccessBlock": "PublicAccessBlock", "logging": "Logging",
    "notification": "Notification", "replication": "Replication",
    "accelerate": "Accelerate", "requestPayment": "RequestPayment",
}


def _subresource(query: dict[str, list[str]]) -> str:
    """The bucket sub-resource named in the query (``?versioning`` → ``Versioning``)."""
    return next((BUCKET_SUBRESOURCES[k] for k in query if k in BUCKET_SUBRESOURCES), "")


@dataclass
class Fault:
    """One injected fault: answers (or drops) the next ``remaining`` matching requests."""

    when: Predicate
    remaining: int
    action: Literal["error", "drop"]
    status: int = 503
    code: str = "SlowDown"
    message: str = ""
    after_bytes: int | None = None
    hits: int = 0
    """How many requests this fault has answered so far."""


@dataclass(frozen=True)
class Seen:
    """A request in the proxy's log, with what the proxy did about it."""

    request: S3Request
    outcome: Literal["forwarded", "error", "dropped"]
    at: float
    """``time.monotonic()`` when the proxy received it (after the added latency)."""


class S3Proxy:
    """A threaded HTTP/1.1 reverse proxy in front of an S3 endpoint; see the module docstring.

    Args:
        upstream_url: the S3 endpoint to forward to (``http://127.0.0.1:PORT``).
        latency_s: seconds added to every request before it is forwarded or answered; may be
            changed while running (``proxy.latency_s = 0.05``).
        rewrite_host: send the upstream's ``host:port`` as ``Host`` instead of the client's.
        record: keep a log of every request (``requests()``); off for long benchmarks.
    """

    def __init__(self, upstream_url: str, latency_s: float = 0.0, *, rewrite_host: bool = False,
                 record: bool = True) -> None:
        parts = urlsplit(upstream_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream must be an http(s) URL, not {upstream_url!r}")
        self.upstream = parts
        self.latency_s = latency_s
        self.rewrite_host = rewrite_host
        self.record = record
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._log: list[Seen] = []
        self._faults: list[Fault] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> S3Proxy:
        """Listen on a free port of 127.0.0.1 and serve in a background thread."""
        if self._server is not None:
            raise RuntimeError("the proxy is already running")
        handler = type("Handler", (_Handler,), {"proxy": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="s3proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, close every client connection and wait for the handler threads."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_all_connections()
        server.server_close()  # joins the handler threads (block_on_close)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> S3Proxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The endpoint URL to give boto3 (``endpoint_url=``) or ``AWS_ENDPOINT_URL_S3``."""
        if self._server is None:
            raise RuntimeError("the proxy is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- counting ------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Requests received per S3 operation since the start or the last ``reset()``
        (injected errors and dropped connections included)."""
        with self._lock:
            return dict(self._counts)

    def total(self) -> int:
        """All requests received since the start or the last ``reset()``."""
        with self._lock:
            return sum(self._counts.values())

    def requests(self, when: Predicate | None = None) -> list[Seen]:
        """The logged requests (oldest first), those matching ``when`` if given."""
        with self._lock:
            log = list(self._log)
        return [s for s in log if when is None or when(s.request)]

    def reset(self) -> None:
        """Forget the counts and the log (faults stay: see ``clear_faults``)."""
        with self._lock:
            self._counts.clear()
            self._log.clear()

    # -- faults --------------------------------------------------------------------------------

    def fail_next(self, n: int = 1, *, status: int = 503, code: str = "SlowDown",
                  message: str | None = None, when: Predicate | None = None) -> Fault:
        """Answer the next ``n`` matching requests with an S3 XML error, without forwarding.

        Returns the fault, whose ``hits`` tells how many requests it answered.
        """
        return self._add(Fault(when or _always, n, "error", status, code,
                               message or DEFAULT_MESSAGES.get(code, "Injected by S3Proxy")))

    def drop_next(self, n: int = 1, *, when: Predicate | None = None,
                  after_bytes: int | None = None) -> Fault:
        """Reset the connection of the next ``n`` matching requests.

        With ``after_bytes=None`` the request is not forwarded and the connection is reset
        before any answer; with ``after_bytes=k`` it is forwarded, the status line, headers and
        the first ``k`` bytes of the body are sent, then the connection is reset (a response
        cut short: boto3 only notices while reading the body).
        """
        return self._add(Fault(when or _always, n, "drop", after_bytes=after_bytes))

    def clear_faults(self) -> None:
        """Remove every fault not yet used up."""
        with self._lock:
            self._faults.clear()

    def _add(self, fault: Fault) -> Fault:
        if fault.remaining < 1:
            raise ValueError("n must be at least 1")
        with self._lock:
            self._faults.append(fault)
        return fault

    def _admit(self, request: S3Request) -> Fault | None:
        """Count the request and pick the fault it triggers, if any (first added first)."""
        operation = request.operation
        with self._lock:
            self._counts[operation] += 1
            fault = next((f for f in self._faults if f.remaining > 0 and f.when(request)), None)
            if fault is not None:
                fault.remaining -= 1
                fault.hits += 1
                self._faults = [f for f in self._faults if f.remaining > 0]
            if self.record:
                outcome: Literal["forwarded", "error", "dropped"] = (
                    "forwarded" if fault is None else
                    "error" if fault.action == "error" else "dropped")
                self._log.append(Seen(request, outcome, time.monotonic()))
        return fault


def _always(_request: S3Request) -> bool:
    return True


class _Server(ThreadingHTTPServer):
    """Tracks client connections so ``stop()`` can end idle keep-alive handlers at once."""

    daemon_threads = False
    block_on_close = True
    request_queue_size = 128

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_all_connections(self) -> None:
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    """One client connection: requests are handled one after another on this thread."""

    proxy: S3Proxy  # set on the subclass made by S3Proxy.start
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body leave as separate small writes
    timeout = 120  # an idle client connection is closed after this many seconds
    _upstream: http.client.HTTPConnection | None = None
    _expect_continue = False

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests and benchmarks read counts, not access logs."""

    def handle_expect_100(self) -> bool:
        """Defer ``100 Continue`` until we know the request is forwarded."""
        self._expect_continue = True
        return True

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        if self._upstream is not None:
            self._upstream.close()

    def _serve(self) -> None:
        target = urlsplit(self.path)
        request = S3Request(self.command, unquote(target.path),
                            parse_qs(target.query, keep_blank_values=True), self.headers)
        if self.proxy.latency_s > 0:
            time.sleep(self.proxy.latency_s)
        fault = self.proxy._admit(request)
        try:
            if fault is not None and fault.action == "error":
                self._answer_error(request, fault)
            elif fault is not None and fault.after_bytes is None:
                self._reset()
            else:
                self._forward(None if fault is None else fault.after_bytes)
        finally:
            self._expect_continue = False

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_OPTIONS = do_PATCH = _serve

    # -- answering ourselves -------------------------------------------------------------------

    def _answer_error(self, request: S3Request, fault: Fault) -> None:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{escape(fault.code)}</Code><Message>{escape(fault.message)}</Message>"
            f"<Resource>{escape(request.path)}</Resource>"
            "<RequestId>S3PROXY</RequestId></Error>"
        ).encode()
        # A body we did not read (or a client waiting for 100 Continue) makes the connection
        # unusable: read a small one, else close after answering, as S3 does.
        keep = not self._expect_continue and self._drain_body()
        self.send_response_only(fault.status, http.client.responses.get(fault.status, "Error"))
        self.send_header("Content-Type", "application/xml")
        self.send_header("x-amz-request-id", "S3PROXY")
        self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(body)))
        if not keep:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _drain_body(self, limit: int = 16 * 1024 * 1024) -> bool:
        """Read and discard a request body of known size up to ``limit``; True if done."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return False
        remaining = int(self.headers.get("Content-Length") or 0)
        if remaining > limit:
            return False
        while remaining > 0:
            data = self.rfile.read(min(CHUNK, remaining))
            if not data:
                return False
            remaining -= len(data)
        return True

    def _reset(self) -> None:
        """Close the connection with a TCP reset, without answering."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()

    # -- forwarding ----------------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        up = self.proxy.upstream
        conn = self._upstream
        if conn is not None and conn.sock is not None:
            readable, _, _ = select.select([conn.sock], [], [], 0)
            if readable:  # closed by the upstream while idle (or junk): start afresh
                conn.close()
        if conn is None:
            kind = (http.client.HTTPSConnection if up.scheme == "https"
                    else http.client.HTTPConnection)
            conn = kind(up.hostname or "127.0.0.1", up.port, timeout=120)
            self._upstream = conn
        return conn

    def _forward(self, cut_after: int | None) -> None:
        up = self.proxy.upstream
        conn = self._connection()
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        try:
            conn.putrequest(self.command, up.path.rstrip("/") + self.path, skip_host=True,
                            skip_accept_encoding=True)
            for name, value in self.headers.items():
                lower = name.lower()
                if lower in HOP_BY_HOP:
                    continue
                if lower == "host" and self.proxy.rewrite_host:
                    value = up.netloc
                conn.putheader(name, value)
            conn.endheaders()
            if self._expect_continue:
                self.send_response_only(100)
                self.end_headers()
            if chunked:
                self._copy_chunked(conn)
            else:
                self._copy_exact(conn, int(self.headers.get("Content-Length") or 0))
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as err:
            conn.close()
            self._bad_gateway(err)
            return
        self._relay(response, conn, cut_after)

    def _copy_exact(self, conn: http.client.HTTPConnection, length: int) -> None:
        while length > 0:
            data = self.rfile.read(min(CHUNK, length))
            if not data:
                raise ConnectionError("the client closed the connection mid-body")
            conn.send(data)
            length -= len(data)

    def _copy_chunked(self, conn: http.client.HTTPConnection) -> None:
        """Forward a chunked body with its framing unchanged, trailers included."""
        while True:
            line = self.rfile.readline(65537)
            if not line:
                raise ConnectionError("the client closed the connection mid-body")
            conn.send(line)
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                break
            self._copy_exact(conn, size + 2)  # the data and its CRLF
        while True:  # trailers, up to the empty line
            line = self.rfile.readline(65537)
            if not line:
                raise ConnectionError("the client closed the connection in the trailers")
            conn.send(line)
            if line in (b"\r\n", b"\n"):
                break

    def _relay(self, response: http.client.HTTPResponse, conn: http.client.HTTPConnection,
               cut_after: int | None) -> None:
        no_body = (self.command == "HEAD" or response.status in (204, 304)
                   or 100 <= response.status < 200)
        length = response.getheader("Content-Length")
        rechunk = not no_body and length is None
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() in HOP_BY_HOP or name.lower() == "transfer-encoding":
                continue
            self.send_header(name, value)
        if rechunk:
            self.send_header("Transfer-Encoding", "chunked")
        # An upstream that closes after each answer (moto's server does) is not S3, which keeps
        # connections alive: the client's connection stays open (every answer is framed by
        # its length or re-chunked) and the next request opens a new upstream connection.
        self.end_headers()
        sent = 0
        try:
            while not no_body:
                want = CHUNK if cut_after is None else min(CHUNK, cut_after - sent)
                data = response.read(want) if want > 0 else b""
                if not data:
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if rechunk else data)
                sent += len(data)
            if cut_after is not None:
                self.wfile.flush()
                conn.close()  # the rest of the upstream's answer is abandoned
                self._reset()
                return
            if rechunk:
                self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (OSError, http.client.HTTPException):
            conn.close()
            self.close_connection = True
            return
        if not no_body and length is not None and response.length:  # the upstream closed early
            conn.close()
            self.close_connection = True  # the client sees the body cut short, at once
            return
        if response.will_close:
            conn.close()

    def _bad_gateway(self, err: BaseException) -> None:
        """The upstream failed before answering: say so in S3's words and close."""
        body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>BadGateway</Code>'
                f"<Message>{escape(f'S3Proxy: upstream failed: {err}')}</Message></Error>"
                ).encode()
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.send_response_only(502, "Bad Gateway")
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()

