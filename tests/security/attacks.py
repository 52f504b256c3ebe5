"""What an attacker sends, with the standard library (raw requests, odd headers, slow bodies); what to read.

Everything here talks to loopback only and is bounded in time and bytes. Linux routes all of 127.0.0.0/8 to
the loopback interface, so a test can be several clients (addresses) at once: ``source="127.0.0.7"``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"

HOUSE = {
    "crim": 0.00632, "zn": 18.0, "indus": 2.31, "chas": 0, "nox": 0.538, "rm": 6.575, "age": 65.2,
    "dis": 4.09, "rad": 1, "tax": 296, "ptratio": 15.3, "lstat": 4.98,
}  # fmt: skip
"""The first house of the data set, as the original API takes it."""


@dataclass
class Answer:
    """A response: status, headers (names in lower case), body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | dict[str, Any] | list[Any] | None = None,
    headers: Sequence[tuple[str, str]] | dict[str, str] = (),
    *,
    source: str = HOST,
    timeout: float = 20.0,
) -> Answer:
    """One request over a fresh connection from ``source``; headers may repeat (a list of pairs)."""
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers)
    if isinstance(body, dict | list):
        body = json.dumps(body).encode()
        pairs.append(("content-type", "application/json"))
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout, source_address=(source, 0))
    connection.putrequest(method, path, skip_accept_encoding=True)
    for name, value in pairs:
        connection.putheader(name, value)
    if body is not None:
        connection.putheader("content-length", str(len(body)))
    return _answer(connection, lambda: connection.endheaders(body))


def chunked(
    port: int, path: str, chunks: Iterator[bytes], headers: dict[str, str], *, timeout: float = 30.0
) -> Answer:
    """A POST whose body is sent in chunks (no ``Content-Length``), as long as the server keeps reading."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    return _answer(connection, lambda: connection.request("POST", path, chunks, headers, encode_chunked=True))


def _answer(connection: http.client.HTTPConnection, send: Callable[[], None]) -> Answer:
    """Send with ``send()``, then read the answer, also when the server answered before the body had gone."""
    try:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # refused early: read what it said
            send()
        response = connection.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


@dataclass
class SlowResult:
    """What became of one slow-body connection."""

    status: int | None  # None: no answer while the client kept sending
    seconds: float


def slow_body(
    port: int,
    path: str,
    headers: dict[str, str],
    *,
    length: int = 100,
    interval: float = 1.0,
    give_up: float = 30.0,
    source: str = HOST,
) -> SlowResult:
    """Declare a ``length``-byte body, then send one byte every ``interval`` seconds until answered.

    Returns as soon as the server answers (its status) or after ``give_up`` seconds (status ``None``).
    """
    started = time.monotonic()
    sock = socket.create_connection((HOST, port), timeout=give_up, source_address=(source, 0))
    try:
        head = f"POST {path} HTTP/1.1\r\nhost: {HOST}\r\ncontent-length: {length}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        sock.sendall((head + "\r\n").encode())
        sock.settimeout(interval)
        received = b""
        for _ in range(length):
            with contextlib.suppress(TimeoutError):
                received += sock.recv(4096)
            if received:
                break
            if time.monotonic() - started > give_up:
                return SlowResult(None, time.monotonic() - started)
            try:
                sock.sendall(b" ")
            except OSError:  # closed by the server: its answer may still be readable
                break
        sock.settimeout(max(0.1, give_up - (time.monotonic() - started)))
        while b"\r\n" not in received:
            try:
                more = sock.recv(4096)
            except (TimeoutError, OSError):
                break
            if not more:
                break
            received += more
        status = int(received.split(b" ", 2)[1]) if received.startswith(b"HTTP/1.1 ") else None
        return SlowResult(status, time.monotonic() - started)
    finally:
        sock.close()


def slow_head(port: int, *, interval: float = 1.0, give_up: float = 30.0) -> SlowResult:
    """A request line, then one more header every ``interval`` seconds, never the blank line (slowloris)."""
    started = time.monotonic()
    with socket.create_connection((HOST, port), timeout=interval) as sock:
        sock.sendall(f"GET /v2/health/live HTTP/1.1\r\nhost: {HOST}\r\n".encode())
        for number in range(int(give_up / interval)):
            try:
                answer = sock.recv(4096)
            except TimeoutError:
                with contextlib.suppress(OSError):
                    sock.sendall(f"x-slow-{number}: 1\r\n".encode())
                continue
            status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None
            return SlowResult(status, time.monotonic() - started)
    return SlowResult(None, time.monotonic() - started)


def idle_keep_alive(port: int, idle: float) -> list[int]:
    """Two requests on one keep-alive connection, ``idle`` seconds apart: their statuses."""
    connection = http.client.HTTPConnection(HOST, port, timeout=idle + 10)
    statuses = []
    try:
        for pause in (0.0, idle):
            time.sleep(pause)
            connection.request("GET", "/v2/health/live")
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
    except (OSError, http.client.HTTPException):
        statuses.append(0)
    finally:
        connection.close()
    return statuses


def endless_header(port: int, *, chunk: int = 32 << 10, most: int = 4 << 20) -> tuple[int | None, int]:
    """One header sent ``chunk`` bytes at a time, never ended, up to ``most`` bytes: (status, bytes sent).

    Stops sending as soon as the server answers (or closes); the status is ``None`` without an answer.
    """
    sent = 0
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(f"GET /v2/health/live HTTP/1.1\r\nhost: {HOST}\r\nx-endless: ".encode())
        sock.setblocking(False)
        answer = b""
        while sent < most:
            try:
                answer += sock.recv(4096)
                break
            except BlockingIOError:
                pass
            except OSError:
                break
            try:
                sent += sock.send(b"e" * chunk)
            except BlockingIOError:
                time.sleep(0.01)
            except OSError:
                break
        sock.settimeout(5)
        with contextlib.suppress(OSError):
            answer += sock.recv(4096)
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None
    return status, sent


class Background:
    """Runs calls in threads and keeps their results (an attack under way while a test checks others)."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.results: list[Any] = []
        self._lock = threading.Lock()

    def start(self, call: Any, *args: Any, **kwargs: Any) -> None:
        def run() -> None:
            result = call(*args, **kwargs)
            with self._lock:
                self.results.append(result)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self, timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return list(self.results)


def listening_addresses(pid: int) -> set[str]:
    """The addresses process ``pid`` listens on (TCP, v4 and v6), e.g. ``{"127.0.0.1"}``."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    addresses = set()
    for table, v6 in ((f"/proc/{pid}/net/tcp", False), (f"/proc/{pid}/net/tcp6", True)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                addresses.add(_address(fields[1].split(":")[0], v6))
    return addresses


def _address(hexadecimal: str, v6: bool) -> str:
    raw = bytes.fromhex(hexadecimal)
    if not v6:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[index : index + 4][::-1] for index in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` (``VmRSS`` in /proc/PID/status), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def metrics_text(port: int) -> str:
    return request(port, "GET", "/metrics").text


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items()):
                total += sample.value
    return total


def sample_lines(text: str) -> int:
    """Lines of samples (not comments) in a Prometheus exposition: what a cardinality attack grows."""
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def cloud_event(
    event_id: str, kind: str = "request", endpoint: str = "default"
) -> tuple[dict[str, str], bytes]:
    """A binary-mode KServe inference-log CloudEvent of one house (``kind``: request or response)."""
    body = {"instances": [HOUSE]} if kind == "request" else {"predictions": [24.0]}
    headers = {
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-source": "http://attacker/",
        "ce-type": f"org.kubeflow.serving.inference.{kind}",
        "ce-endpoint": endpoint,
        "ce-inferenceservicename": "housing",
        "content-type": "application/json",
    }
    return headers, json.dumps(body).encode()
