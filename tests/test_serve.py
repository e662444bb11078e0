"""``kvstore serve``: every endpoint over real HTTP, bad input of each kind, the token and the Host and
Origin checks, bounded bodies and pages, read-only by default, a concurrent load of readers and writers
with nothing lost, and a clean stop on SIGINT that releases the database's lock."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from cliproc import err_line, run
from prometheus_client.parser import text_string_to_metric_families
from servehelp import b64, serving, unb64

from kvstore import KV, Config
from kvstore.serve import MAX_BODY, MAX_PAGE


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "db"
    with KV.open(path, Config(memtable_size=1 << 14)) as kv:
        for i in range(500):
            kv.set(b"k%04d" % i, b"v%d" % i)
        kv.collection("users").set(b"alice", b"1")
        kv.collection("users").set(b"bob", b"2")
    return path


def test_reads_answer_json_with_base64_keys_and_values(db: Path) -> None:
    with serving(db) as s:
        assert s.json("GET", f"/api/get?key={b64(b'k0001')}") == (200, {"key": b64(b"k0001"), "value": b64(b"v1"),
                                                                        "ttl": None})
        status, body = s.json("GET", f"/api/get?key={b64(b'nope')}")
        assert status == 404 and body["error"]
        assert s.json("GET", f"/api/get?key={b64(b'bob')}&collection=users")[1]["value"] == b64(b"2")
        assert s.json("GET", "/api/collections") == (200, {"collections": ["users"]})
        status, stats = s.json("GET", "/api/stats")
        assert status == 200 and stats["sequence"] == 502 and stats["config"]["writable"] is False
        assert stats["tables"] and {"get", "commit", "fsync", "flush", "merge"} <= set(stats["latency"])
        status, traced = s.json("GET", f"/api/trace?key={b64(b'k0002')}")
        assert status == 200 and traced["answer"] == "value" and unb64(traced["value"]) == b"v2"
        status, headers, text = s.request("GET", "/metrics")
        assert status == 200 and headers["content-type"].startswith("text/plain")
        names = {f.name for f in text_string_to_metric_families(text.decode())}
        assert {"kvstore_commits", "kvstore_get_seconds", "kvstore_tables"} <= names
    assert s.stopped_with[0] == 0  # type: ignore[attr-defined]


def test_scan_pages_forward_and_backward_with_bounds_prefix_and_limit(db: Path) -> None:
    with serving(db) as s:
        keys: list[bytes] = []
        after = None
        while True:
            query = f"/api/scan?prefix={b64(b'k01')}&limit=7" + (f"&after={after}" if after else "")
            status, page = s.json("GET", query)
            assert status == 200 and len(page["items"]) <= 7
            keys += [unb64(item["key"]) for item in page["items"]]
            after = page["next"]
            if after is None:
                break
        assert keys == [b"k%04d" % i for i in range(100, 200)]
        status, page = s.json("GET", f"/api/scan?start={b64(b'k0010')}&end={b64(b'k0020')}&reverse=true&limit=3")
        assert [unb64(i["key"]) for i in page["items"]] == [b"k0019", b"k0018", b"k0017"]
        status, page2 = s.json("GET", f"/api/scan?start={b64(b'k0010')}&end={b64(b'k0020')}&reverse=true&limit=3"
                                      f"&after={page['next']}")
        assert [unb64(i["key"]) for i in page2["items"]] == [b"k0016", b"k0015", b"k0014"]
        status, page = s.json("GET", "/api/scan?collection=users")
        assert [unb64(i["key"]) for i in page["items"]] == [b"alice", b"bob"] and page["next"] is None


@pytest.mark.parametrize(("query", "status"), [
    ("/api/get", 400),                              # no key
    ("/api/get?key=not*base64", 400),
    ("/api/get?key=YQ==&collection=" + "n" * 300, 400),
    ("/api/scan?limit=0", 400),
    ("/api/scan?limit=ten", 400),
    (f"/api/scan?limit={MAX_PAGE + 1}", 413),        # a page past the bound
    ("/api/scan?reverse=maybe", 400),
    ("/api/scan?start=%%%", 400),
    ("/api/trace", 400),
    ("/api/nothing", 404),
])
def test_bad_requests_get_json_errors(db: Path, query: str, status: int) -> None:
    with serving(db) as s:
        got, body = s.json("GET", query)
        assert got == status and isinstance(body["error"], str) and body["error"]


def test_a_read_only_server_refuses_every_write_and_changes_nothing(db: Path) -> None:
    with serving(db) as s:
        for path, body in (("/api/put", {"key": b64(b"x"), "value": b64(b"1")}),
                           ("/api/delete", {"key": b64(b"k0001")}),
                           ("/api/delete-range", {"start": b64(b"k"), "end": b64(b"l")})):
            status, answer = s.json("POST", path, body)
            assert status == 403 and "--writable" in answer["error"]
        assert s.json("GET", "/api/put")[0] == 405
    with KV.open(db) as kv:
        assert kv.get(b"x") is None and kv.get(b"k0001") == b"v1"


def test_a_writable_server_writes_and_rejects_bad_bodies(db: Path) -> None:
    with serving(db, "--writable") as s:
        assert s.json("POST", "/api/put", {"key": b64(b"new"), "value": b64(b"\x00\xff")}) == (200, {"ok": True})
        assert s.json("POST", "/api/put", {"key": b64(b"c"), "value": b64(b"v"), "collection": "tags"})[0] == 200
        assert s.json("POST", "/api/put", {"key": b64(b"t"), "value": b64(b"v"), "ttl": 100})[0] == 200
        assert s.json("POST", "/api/delete", {"key": b64(b"k0001")}) == (200, {"existed": True})
        assert s.json("POST", "/api/delete", {"key": b64(b"k0001")}) == (200, {"existed": False})
        assert s.json("POST", "/api/delete-range", {"start": b64(b"k01"), "end": b64(b"k02")}) == (200, {"ok": True})
        for body in ({"key": b64(b"a")}, {"key": 5, "value": b64(b"v")}, {"key": b64(b"a"), "value": b64(b"v"),
                                                                         "ttl": "soon"},
                     {"key": b64(b"a"), "value": b64(b"v"), "ttl": -1}, [1, 2], {"key": b64(b"a"), "value": "@@"},
                     {"key": b64(b"a"), "value": b64(b"v"), "collection": "x" * 256}):
            status, answer = s.json("POST", "/api/put", body)
            assert status == 400 and answer["error"], body
        status, _, data = s.request("POST", "/api/put", raw=b"{not json")
        assert status == 400 and b"JSON" in data
        status, _, data = s.request("POST", "/api/put", raw=b"x" * (MAX_BODY + 1))
        assert status == 413
        assert s.json("GET", f"/api/get?key={b64(b'new')}")[1]["value"] == b64(b"\x00\xff")  # still serving
    with KV.open(db) as kv:
        assert kv.get(b"new") == b"\x00\xff" and kv.collection("tags").get(b"c") == b"v"
        assert kv.get(b"k0001") is None and kv.get(b"k0150") is None and kv.get(b"k0200") == b"v200"
        assert 0 < (kv.ttl(b"t") or 0) <= 100


def test_a_body_sent_in_chunks_past_the_bound_is_refused(db: Path) -> None:
    import http.client

    with serving(db, "--writable") as s:
        conn = http.client.HTTPConnection(s.host, s.port, timeout=30)
        conn.putrequest("POST", "/api/put")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.putheader("Content-Type", "application/json")
        conn.endheaders()
        chunk = b"x" * 65536
        try:
            for _ in range(MAX_BODY // len(chunk) + 2):
                conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.send(b"0\r\n\r\n")
        except OSError:
            pass  # the server may answer and close before the rest is sent
        response = conn.getresponse()
        assert response.status == 413
        conn.close()
        assert s.json("GET", "/api/collections")[0] == 200


@pytest.mark.parametrize("header", [{"Host": "evil.example:80"}, {"Host": "127.0.0.1:1"},
                                    {"Origin": "http://evil.example"}, {"Origin": "null"},
                                    {"Origin": "https://127.0.0.1"}])
def test_a_foreign_host_or_origin_gets_403_before_routing(db: Path, header: dict[str, str]) -> None:
    with serving(db, "--writable") as s:
        for method, path in (("GET", "/api/stats"), ("GET", "/"), ("POST", "/api/put"), ("GET", "/nowhere")):
            status, _, body = s.request(method, path, {"key": b64(b"h"), "value": b64(b"1")}, headers=header)
            assert status == 403 and b"error" in body, (method, path)
        own = {"Host": f"localhost:{s.port}", "Origin": f"http://localhost:{s.port}"}
        assert s.json("GET", "/api/stats", headers=own)[0] == 200
    with KV.open(db) as kv:
        assert kv.get(b"h") is None


def test_a_token_is_required_on_every_data_request(db: Path) -> None:
    with serving(db, "--token", "s3cret") as s:
        for path in ("/api/stats", "/metrics", f"/api/get?key={b64(b'k0001')}", "/api/scan"):
            status, headers, _ = s.request("GET", path)
            assert status == 401 and headers["www-authenticate"].startswith("Bearer"), path
            assert s.request("GET", path, headers={"Authorization": "Bearer wrong"})[0] == 401
            assert s.request("GET", path, headers={"Authorization": "Bearer s3cret"})[0] == 200
        status, _, page = s.request("GET", "/")
        assert status == 200 and b"<title>kvstore</title>" in page  # the page holds no data: it asks for the token


def test_listening_beyond_loopback_needs_a_token_and_host_names(db: Path) -> None:
    result = run("serve", db, "--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 2 and "token" in err_line(result)
    result = run("serve", db, "--host", "0.0.0.0", "--port", "0", "--token", "t")
    assert result.returncode == 2 and "--allow-host" in err_line(result)
    missing = run("serve", db.parent / "none", "--port", "0")
    assert missing.returncode == 4


def test_concurrent_readers_and_writers_lose_nothing(db: Path) -> None:
    with serving(db, "--writable") as s:
        errors: list[str] = []

        def writer(n: int) -> None:
            for i in range(60):
                status, _ = s.json("POST", "/api/put", {"key": b64(b"w%d-%03d" % (n, i)), "value": b64(b"%d" % i)})
                if status != 200:
                    errors.append(f"put {status}")

        def reader() -> None:
            for i in range(60):
                status, body = s.json("GET", f"/api/get?key={b64(b'k%04d' % i)}")
                if status != 200 or unb64(body["value"]) != b"v%d" % i:
                    errors.append(f"get {status}")

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        threads += [threading.Thread(target=reader) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        status, page = s.json("GET", f"/api/scan?prefix={b64(b'w')}&limit={MAX_PAGE}")
        assert status == 200
        assert len(page["items"]) == 240
    with KV.open(db) as kv:
        assert sum(1 for _ in kv.scan(prefix=b"w")) == 240


def test_sigint_closes_the_database_and_releases_its_lock(db: Path) -> None:
    with serving(db, "--writable") as s:
        assert s.json("POST", "/api/put", {"key": b64(b"last"), "value": b64(b"1")})[0] == 200
    code, stderr = s.stopped_with  # type: ignore[attr-defined]
    assert code == 0 and "database closed" in stderr and "Traceback" not in stderr
    with KV.open(db) as kv:  # the lock is free, and the write is there
        assert kv.get(b"last") == b"1"
