"""What the server tests share: ``kvstore serve`` of this checkout started as a real process on a free
loopback port, HTTP requests to it with the standard library, and its clean stop by SIGINT."""

from __future__ import annotations

import base64
import http.client
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cliproc import ENV


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


class Server:
    """A running ``kvstore serve``: its process, host and port."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str) -> None:
        self.proc = proc
        self.url = url
        found = re.match(r"http://(.+):(\d+)/", url)
        assert found is not None, url
        self.host, self.port = found.group(1), int(found.group(2))

    def request(self, method: str, path: str, body: object = None, headers: dict[str, str] | None = None,
                raw: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        """One request on a fresh connection: (status, headers, body)."""
        conn = http.client.HTTPConnection(self.host.strip("[]"), self.port, timeout=30)
        try:
            data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
            sent = {"Content-Type": "application/json"} if data is not None else {}
            sent.update(headers or {})
            conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, body: object = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        status, got, data = self.request(method, path, body, headers)
        assert got.get("content-type", "").startswith("application/json"), (path, got, data[:200])
        assert b"Traceback" not in data
        return status, json.loads(data)


@contextmanager
def serving(path: Path, *args: str) -> Iterator[Server]:
    """``kvstore serve PATH --port 0 ARGS`` until the block ends, then SIGINT: it must exit 0, its KV
    closed (the database's lock released)."""
    proc = subprocess.Popen([sys.executable, "-m", "kvstore", "serve", str(path), "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    found = re.search(r"http://\S+/", line)
    if found is None:
        proc.kill()
        raise AssertionError(f"the server did not start: {line}{proc.stderr.read().decode()}")
    server = Server(proc, found.group(0))
    try:
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            rest = proc.communicate(timeout=30)[1].decode()
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("the server did not stop on SIGINT") from None
        server.stopped_with = (proc.returncode, rest)  # type: ignore[attr-defined]


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)
