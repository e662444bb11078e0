"""Throughput of ``kvstore serve`` under 8 concurrent HTTP clients: gets, then puts, then half and half.

    python examples/serve_load.py [--clients 8] [--seconds 10] [--keys 10000]

Starts ``kvstore serve --writable`` on a fresh database on a free loopback port, loads ``--keys`` keys,
then runs each phase for ``--seconds`` with ``--clients`` threads, each on its own keep-alive connection,
and prints requests per second and the median and 99th-percentile latency of each phase.  Puts are durable
(``Config.sync``'s default): concurrent ones share fsyncs through the write queue.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--keys", type=int, default=10_000)
    args = parser.parse_args()
    path = tempfile.mkdtemp() + "/db"
    proc = subprocess.Popen([sys.executable, "-m", "kvstore", "serve", path, "--port", "0", "--writable"],
                            stderr=subprocess.PIPE)
    assert proc.stderr is not None
    found = re.search(r"http://(\S+):(\d+)/", proc.stderr.readline().decode())
    assert found is not None
    host, port = found.group(1), int(found.group(2))
    try:
        conn = http.client.HTTPConnection(host, port)
        for i in range(0, args.keys):
            _put(conn, i)
        for phase, share in (("get", 0.0), ("put", 1.0), ("half and half", 0.5)):
            done, latencies = _phase(host, port, args.clients, args.seconds, args.keys, share)
            lat = sorted(latencies)
            print(f"{phase:>14}: {done / args.seconds:8,.0f} requests/s  median {statistics.median(lat) * 1e3:6.2f} ms"
                  f"  p99 {lat[int(len(lat) * 0.99)] * 1e3:6.2f} ms  ({args.clients} clients)")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def _put(conn: http.client.HTTPConnection, i: int) -> None:
    body = json.dumps({"key": base64.b64encode(b"key%08d" % i).decode(),
                       "value": base64.b64encode(b"v" * 100).decode()})
    conn.request("POST", "/api/put", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    assert response.status == 200, response.status


def _phase(host: str, port: int, clients: int, seconds: float, keys: int,
           put_share: float) -> tuple[int, list[float]]:
    stop = time.monotonic() + seconds
    counts: list[int] = []
    latencies: list[float] = []
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection(host, port)
        n, mine = 0, []
        while time.monotonic() < stop:
            start = time.perf_counter()
            i = rng.randrange(keys)
            if rng.random() < put_share:
                _put(conn, i)
            else:
                conn.request("GET", "/api/get?key=" + base64.b64encode(b"key%08d" % i).decode())
                response = conn.getresponse()
                response.read()
                assert response.status == 200, response.status
            mine.append(time.perf_counter() - start)
            n += 1
        with lock:
            counts.append(n)
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts), latencies


if __name__ == "__main__":
    main()
