"""The S3 fault/latency proxy (``tests/s3proxy.py``): boto3 works through it unchanged, it counts
what it forwards, its injected errors and resets reach boto3 as S3 would send them, it adds the
latency asked for, streams bodies byte for byte, keeps connections alive and stops cleanly."""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
import urllib3.connection
import urllib3.util.connection
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ResponseStreamingError

from kernel.s3errors import is_transient_boto
from tests.s3proxy import S3Proxy, S3Request, classify, on

NO_RETRIES = Config(signature_version="s3v4", s3={"addressing_style": "path"},
                    retries={"total_max_attempts": 1}, max_pool_connections=16)


def client(endpoint: str, config: Config = NO_RETRIES) -> Any:
    """A client that tries each call once, so counts are exact.

    ``retries={"max_attempts": 1}`` would still allow one retry: boto3 reads ``max_attempts``
    as the number of retries and adds the first attempt (``total_max_attempts`` = 2).
    """
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
        aws_secret_access_key="test", config=config)


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[S3Proxy]:
    with S3Proxy(moto_endpoint) as running:
        yield running


@pytest.fixture
def bucket(moto_endpoint: str) -> str:
    name = f"proxy-{os.urandom(5).hex()}"
    client(moto_endpoint).create_bucket(Bucket=name)
    return name


def test_boto3_works_through_the_proxy_and_every_request_is_counted(
        proxy: S3Proxy, bucket: str, moto_endpoint: str) -> None:
    s3 = client(proxy.url)
    s3.head_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="small.txt", Body=b"hello")
    s3.put_object(Bucket=bucket, Key="stream.bin", Body=io.BytesIO(b"x" * 100_000))  # Expect
    assert s3.get_object(Bucket=bucket, Key="small.txt")["Body"].read() == b"hello"
    assert s3.head_object(Bucket=bucket, Key="stream.bin")["ContentLength"] == 100_000
    part1, part2 = os.urandom(5 * 1024 * 1024), os.urandom(1234)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="big.bin")["UploadId"]
    etags = [s3.upload_part(Bucket=bucket, Key="big.bin", UploadId=upload, PartNumber=n,
                            Body=body)["ETag"] for n, body in ((1, part1), (2, part2))]
    s3.complete_multipart_upload(
        Bucket=bucket, Key="big.bin", UploadId=upload,
        MultipartUpload={"Parts": [{"ETag": e, "PartNumber": n}
                                   for n, e in enumerate(etags, start=1)]})
    aborted = s3.create_multipart_upload(Bucket=bucket, Key="gone.bin")["UploadId"]
    assert [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]] == ["gone.bin"]
    s3.abort_multipart_upload(Bucket=bucket, Key="gone.bin", UploadId=aborted)
    s3.copy_object(Bucket=bucket, Key="copy.txt", CopySource={"Bucket": bucket, "Key": "small.txt"})
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["big.bin", "copy.txt", "small.txt", "stream.bin"]
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "copy.txt"}]})
    s3.delete_object(Bucket=bucket, Key="stream.bin")
    # the bytes arrived unchanged: read them straight from moto, not through the proxy
    direct = client(moto_endpoint)
    assert direct.get_object(Bucket=bucket, Key="big.bin")["Body"].read() == part1 + part2
    # a presigned link minted for the proxy works through it (the signed Host is preserved)
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "small.txt"},
                                    ExpiresIn=60)
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"hello"

    assert proxy.counts() == {
        "HeadBucket": 1, "PutObject": 2, "GetObject": 2, "HeadObject": 1,
        "CreateMultipartUpload": 2, "UploadPart": 2, "CompleteMultipartUpload": 1,
        "ListMultipartUploads": 1, "AbortMultipartUpload": 1, "CopyObject": 1,
        "ListObjectsV2": 1, "DeleteObjects": 1, "DeleteObject": 1,
    }
    assert proxy.total() == 17
    assert all(seen.outcome == "forwarded" for seen in proxy.requests())
    proxy.reset()
    assert (proxy.counts(), proxy.total(), proxy.requests()) == ({}, 0, [])


def test_an_injected_503_reaches_boto3_as_slowdown(proxy: S3Proxy, bucket: str,
                                                   moto_endpoint: str) -> None:
    s3 = client(proxy.url)
    s3.put_object(Bucket=bucket, Key="a.txt", Body=b"original")
    fault = proxy.fail_next(1, status=503, code="SlowDown", when=on("GetObject", key="a.txt"))
    with pytest.raises(ClientError) as raised:
        s3.get_object(Bucket=bucket, Key="a.txt")
    error = raised.value.response
    assert error["Error"]["Code"] == "SlowDown"
    assert error["Error"]["Message"] == "Please reduce your request rate."
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert is_transient_boto(raised.value)
    assert fault.hits == 1 and fault.remaining == 0
    assert s3.get_object(Bucket=bucket, Key="a.txt")["Body"].read() == b"original"  # used up
    assert [s.outcome for s in proxy.requests(on("GetObject"))] == ["error", "forwarded"]

    # a PUT waiting for "100 Continue" gets the error instead, and nothing reaches moto
    proxy.fail_next(1, status=403, code="AccessDenied", when=on("PutObject"))
    with pytest.raises(ClientError) as raised:
        s3.put_object(Bucket=bucket, Key="a.txt", Body=io.BytesIO(b"replaced"))
    assert raised.value.response["Error"]["Code"] == "AccessDenied"
    assert not is_transient_boto(raised.value)
    assert client(moto_endpoint).get_object(Bucket=bucket, Key="a.txt")["Body"].read() == (
        b"original")
    # a HEAD error has no body: boto3 reports the status code
    proxy.fail_next(1, status=503, when=on("HeadObject"))
    with pytest.raises(ClientError) as raised:
        s3.head_object(Bucket=bucket, Key="a.txt")
    assert raised.value.response["Error"]["Code"] == "503"
    # the pool is still usable after every error
    s3.put_object(Bucket=bucket, Key="a.txt", Body=io.BytesIO(b"replaced"))
    assert s3.get_object(Bucket=bucket, Key="a.txt")["Body"].read() == b"replaced"
    assert proxy.counts() == {"PutObject": 3, "GetObject": 3, "HeadObject": 1}


def test_boto3_retries_show_in_the_counts(proxy: S3Proxy, bucket: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.retries.standard import ExponentialBackoff

    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)
    s3 = client(proxy.url, Config(s3={"addressing_style": "path"},
                                  retries={"total_max_attempts": 3, "mode": "standard"}))
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    proxy.fail_next(2, status=500, code="InternalError", when=on("GetObject"))
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"
    assert proxy.counts()["GetObject"] == 3
    proxy.fail_next(3, status=503, code="SlowDown", when=on("GetObject"))
    with pytest.raises(ClientError, match="SlowDown"):
        s3.get_object(Bucket=bucket, Key="k")
    assert proxy.counts()["GetObject"] == 6


def test_a_dropped_connection(proxy: S3Proxy, bucket: str, moto_endpoint: str) -> None:
    s3 = client(proxy.url)
    s3.put_object(Bucket=bucket, Key="k", Body=b"0123456789" * 1000)
    # reset before answering: not forwarded, boto3 sees a connection error (transient)
    proxy.drop_next(1, when=on("PutObject"))
    with pytest.raises(BotoCoreError) as raised:
        s3.put_object(Bucket=bucket, Key="k", Body=b"never stored")
    assert is_transient_boto(raised.value)
    assert client(moto_endpoint).get_object(Bucket=bucket, Key="k")["ContentLength"] == 10_000
    # reset after 100 bytes of the body: the call returns, reading the body fails
    proxy.drop_next(1, when=on("GetObject"), after_bytes=100)
    body = s3.get_object(Bucket=bucket, Key="k")["Body"]
    with pytest.raises(ResponseStreamingError) as streaming:
        body.read()
    assert is_transient_boto(streaming.value)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"0123456789" * 1000
    assert [s.outcome for s in proxy.requests()] == [
        "forwarded", "dropped", "dropped", "forwarded"]


def test_latency_is_added_to_every_request(moto_endpoint: str, bucket: str) -> None:
    with S3Proxy(moto_endpoint, latency_s=0.05) as proxy:
        s3 = client(proxy.url)
        s3.head_bucket(Bucket=bucket)  # the connection is open before timing
        started = time.monotonic()
        for _ in range(5):
            s3.head_bucket(Bucket=bucket)
        assert time.monotonic() - started >= 5 * 0.05
        proxy.fail_next(2, when=on("HeadBucket"))
        started = time.monotonic()
        for _ in range(2):
            with pytest.raises(ClientError):
                s3.head_bucket(Bucket=bucket)
        assert time.monotonic() - started >= 2 * 0.05  # injected answers wait too
        assert proxy.total() == 8


def test_concurrent_clients_are_counted_exactly(proxy: S3Proxy, bucket: str) -> None:
    s3 = client(proxy.url)
    bodies = {f"k{i}": os.urandom(1000 + i) for i in range(8)}
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)

    def read(n: int) -> bool:
        key = f"k{n % 8}"
        return bool(s3.get_object(Bucket=bucket, Key=key)["Body"].read() == bodies[key])

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(read, range(200)))
    assert proxy.counts() == {"PutObject": 8, "GetObject": 200}


# -- byte-level behaviour, against a recording upstream ----------------------------------------


class Recorded:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Message, bytes]] = []
        self.peers: list[tuple[str, int]] = []


def recording_upstream(record: Recorded, big: bytes) -> ThreadingHTTPServer:
    """An HTTP/1.1 server that keeps each raw request body (chunk framing included) and answers
    ``/bkt/big`` with ``big`` in chunked encoding, anything else with the body's SHA-256."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _raw_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding") == "chunked":
                raw = b""
                while True:
                    line = self.rfile.readline()
                    raw += line
                    size = int(line.split(b";")[0], 16)
                    if size == 0:
                        break
                    raw += self.rfile.read(size + 2)
                while (line := self.rfile.readline()) not in (b"\r\n", b""):
                    raw += line
                return raw + line
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_PUT(self) -> None:
            body = self._raw_body()
            record.requests.append((self.command, self.path, self.headers, body))
            record.peers.append(self.client_address)
            if self.path == "/bkt/big":
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for start in range(0, len(big), 70_001):
                    piece = big[start:start + 70_001]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
                return
            answer = hashlib.sha256(body).hexdigest().encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


@pytest.fixture
def recorded() -> Iterator[tuple[Recorded, bytes, S3Proxy]]:
    record, big = Recorded(), os.urandom(1024 * 1024 + 3)
    server = recording_upstream(record, big)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with S3Proxy(f"http://127.0.0.1:{server.server_address[1]}") as proxy:
            yield record, big, proxy
    finally:
        server.shutdown()
        server.server_close()


def test_bodies_stream_through_unchanged_on_one_kept_alive_connection(
        recorded: tuple[Recorded, bytes, S3Proxy]) -> None:
    record, big, proxy = recorded
    port = int(proxy.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    # 1. Content-Length with aws-chunked content encoding: opaque bytes, passed as they are
    aws_chunked = b"5;chunk-signature=abc\r\nhello\r\n0;chunk-signature=def\r\n\r\n"
    conn.request("PUT", "/bkt/a?partNumber=1&uploadId=u", body=aws_chunked,
                  headers={"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": "5"})
    response = conn.getresponse()
    assert response.read() == hashlib.sha256(aws_chunked).hexdigest().encode()
    sock = conn.sock
    # 2. Transfer-Encoding: chunked, framing and trailer forwarded byte for byte
    conn.putrequest("PUT", "/bkt/b")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    framed = b"3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nx-amz-checksum-crc32: AAAAAA==\r\n\r\n"
    conn.send(framed)
    assert conn.getresponse().read() == hashlib.sha256(framed).hexdigest().encode()
    # 3. a chunked answer of 1 MiB comes back whole
    conn.request("PUT", "/bkt/big", body=b"")
    assert conn.getresponse().read() == big
    assert conn.sock is sock  # one client connection for the three requests ...
    assert len(set(record.peers)) == 1  # ... and one upstream connection
    assert [r[3] for r in record.requests[:2]] == [aws_chunked, framed]
    host = record.requests[0][2]["Host"]
    assert host == f"127.0.0.1:{port}"  # the Host the client signed
    assert record.requests[0][2]["Content-Encoding"] == "aws-chunked"
    assert proxy.counts() == {"UploadPart": 1, "PutObject": 2}
    conn.close()


def test_a_client_connection_outlives_an_upstream_that_closes_after_each_answer(
        moto_endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's server closes its connection after every answer; S3 does not. Through the proxy
    a client keeps its connection (it pays for one where S3 would make it pay), the proxy opens
    a new upstream connection per request."""
    closing = client(moto_endpoint)
    closing.put_object(Bucket=bucket, Key="k", Body=b"kept")
    raw = http.client.HTTPConnection(urllib.parse.urlsplit(moto_endpoint).hostname,
                                     urllib.parse.urlsplit(moto_endpoint).port, timeout=10)
    raw.request("HEAD", f"/{bucket}/k")
    assert raw.getresponse().will_close  # the emulator closes: what this test is about
    raw.close()
    opened: list[object] = []
    connect = urllib3.util.connection.create_connection

    def counted(*args: Any, **kwargs: Any) -> Any:
        opened.append(args[0])
        return connect(*args, **kwargs)

    monkeypatch.setattr(urllib3.connection.connection, "create_connection", counted)
    with S3Proxy(moto_endpoint) as proxy:
        s3 = client(proxy.url)
        bodies = [s3.get_object(Bucket=bucket, Key="k")["Body"].read() for _ in range(4)]
        assert bodies == [b"kept"] * 4
        assert len(opened) == 1  # one client connection for the four requests
        assert proxy.counts() == {"GetObject": 4}


def test_an_upstream_answer_cut_short_closes_the_clients_connection_at_once() -> None:
    """Kept alive, a client would wait for the missing bytes until its read timeout."""

    class CutShort(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"0123456789")  # 10 of the 100 bytes, then the connection ends
            self.close_connection = True

        def log_message(self, *args: Any) -> None:
            pass

    upstream = ThreadingHTTPServer(("127.0.0.1", 0), CutShort)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    try:
        with S3Proxy(f"http://127.0.0.1:{upstream.server_address[1]}") as proxy:
            port = int(proxy.url.rsplit(":", 1)[1])
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/bkt/key")
            response = conn.getresponse()
            started = time.monotonic()
            with pytest.raises(http.client.IncompleteRead) as cut:
                response.read()
            assert cut.value.partial == b"0123456789"
            assert time.monotonic() - started < 20  # not the client's 30 s timeout
            conn.close()
    finally:
        upstream.shutdown()
        upstream.server_close()


def test_stop_ends_idle_keep_alive_connections_at_once(moto_endpoint: str, bucket: str) -> None:
    proxy = S3Proxy(moto_endpoint).start()
    port = int(proxy.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("HEAD", f"/{bucket}")
    assert conn.getresponse().status == 200  # the connection stays open, idle
    started = time.monotonic()
    proxy.stop()
    assert time.monotonic() - started < 5  # not the 120 s idle timeout
    with pytest.raises(ConnectionRefusedError):
        http.client.HTTPConnection("127.0.0.1", port, timeout=2).request("HEAD", f"/{bucket}")
    conn.close()


@pytest.mark.parametrize(("method", "target", "headers", "operation"), [
    ("GET", "/", {}, "ListBuckets"),
    ("HEAD", "/b", {}, "HeadBucket"),
    ("PUT", "/b", {}, "CreateBucket"),
    ("PUT", "/b?versioning", {}, "PutBucketVersioning"),
    ("GET", "/b?list-type=2&prefix=", {}, "ListObjectsV2"),
    ("GET", "/b?prefix=&delimiter=%2F", {}, "ListObjects"),
    ("GET", "/b?uploads", {}, "ListMultipartUploads"),
    ("POST", "/b?delete", {}, "DeleteObjects"),
    ("GET", "/b/k/with%20space", {}, "GetObject"),
    ("HEAD", "/b/k", {}, "HeadObject"),
    ("PUT", "/b/k", {}, "PutObject"),
    ("PUT", "/b/k", {"x-amz-copy-source": "/b/o"}, "CopyObject"),
    ("POST", "/b/k?uploads", {}, "CreateMultipartUpload"),
    ("PUT", "/b/k?partNumber=2&uploadId=u", {}, "UploadPart"),
    ("PUT", "/b/k?partNumber=2&uploadId=u", {"x-amz-copy-source": "/b/o"}, "UploadPartCopy"),
    ("GET", "/b/k?uploadId=u", {}, "ListParts"),
    ("POST", "/b/k?uploadId=u", {}, "CompleteMultipartUpload"),
    ("DELETE", "/b/k?uploadId=u", {}, "AbortMultipartUpload"),
    ("DELETE", "/b/k", {}, "DeleteObject"),
])
def test_requests_are_classified_by_s3_operation(method: str, target: str,
                                                 headers: dict[str, str], operation: str) -> None:
    from urllib.parse import parse_qs, unquote, urlsplit

    message = Message()
    for name, value in headers.items():
        message[name] = value
    parts = urlsplit(target)
    query = parse_qs(parts.query, keep_blank_values=True)
    assert classify(method, unquote(parts.path), query, message) == operation
    request = S3Request(method, unquote(parts.path), query, message)
    assert request.operation == operation
    if parts.path.count("/") >= 2:
        assert (request.bucket, request.key) == ("b", unquote(parts.path)[3:])
