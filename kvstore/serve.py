"""``kvstore serve PATH``: an HTTP JSON API, ``/metrics`` and a live dashboard over one database.

The app is Starlette over the asyncio API (``kvstore.aio``), run by uvicorn;
both come with the ``serve`` extra (DESIGN.md, "The server").  Every
request passes ``Guard`` before any route sees it:

  - a ``Host`` that is not the server's own, or an ``Origin`` that is not
    ``http://`` + one of them, gets 403 (DNS rebinding, cross-site requests);
  - with a token, a request without ``Authorization: Bearer TOKEN`` gets 401
    (the dashboard's page itself, which holds no data, excepted: it asks for
    the token and sends it with every request it makes);
  - a body over ``max_body`` bytes gets 413, read no further.

Writes answer 403 unless the server was started ``--writable`` (the KV is
then opened read-only).  Keys and values travel as base64 in JSON, as in the
command line's JSON.  Errors are JSON ``{"error": ...}`` with a 4xx or 5xx
code; a response never carries a traceback.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import importlib.resources
import ipaddress
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from kvstore.aio import AsyncKV
from kvstore.config import Config
from kvstore.errors import ClosedError, FailedError, KeyOrValueTooLargeError, ReadOnlyError
from kvstore.report import jsonable, stats_tree

__all__ = ["LOOPBACK_NAMES", "MAX_BODY", "MAX_PAGE", "Settings", "create_app", "loopback", "serve"]

log = logging.getLogger("kvstore.serve")

#: Bytes of a request body, at most (413 past it).
MAX_BODY = 1 << 20
#: Rows of one scan page, at most (413 past it); the default page is ``PAGE``.
MAX_PAGE = 1000
PAGE = 100
#: Host names that reach a loopback address.
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


@attrs.frozen
class Settings:
    """What one server serves, and to whom."""

    path: str
    host: str
    port: int
    writable: bool = False
    token: str | None = None
    allow_hosts: tuple[str, ...] = ()
    max_body: int = MAX_BODY
    config: Config = attrs.field(factory=Config)

    def hosts(self) -> frozenset[str]:
        """The ``Host`` values this server answers: its address (and the loopback names when it is a
        loopback one) and each allowed name, with the port."""
        names = {_bracketed(self.host), *self.allow_hosts}
        if loopback(self.host):
            names.update(LOOPBACK_NAMES)
        return frozenset(f"{name}:{self.port}" for name in names)


def loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class BodyTooLarge(Exception):
    """A request body grew past the bound while it was read."""


class Guard:
    """The checks every request passes before routing (see the module docstring), as ASGI middleware."""

    def __init__(self, app: Callable[..., Awaitable[None]], settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.hosts = settings.hosts()

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await _send_json(send, *refusal)
            return
        limit = self.settings.max_body
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _send_json(send, 413, f"request body over {limit} bytes")
            return
        received = 0
        started = False

        async def counted() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        async def tracked(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            if not started:
                await _send_json(send, 413, f"request body over {limit} bytes")

    def _refusal(self, scope: dict[str, Any], headers: dict[str, str]) -> tuple[int, str] | None:
        """(status, reason) when the request is refused before routing, else None."""
        host = headers.get("host", "")
        if host not in self.hosts:
            return 403, "the Host header does not name this server"
        origin = headers.get("origin")
        if origin is not None and (not origin.startswith("http://") or origin[len("http://"):] not in self.hosts):
            return 403, "cross-origin requests are refused"
        token = self.settings.token
        if token is not None and not (scope["method"] == "GET" and scope["path"] == "/"):
            sent = headers.get("authorization", "")
            if not _same(sent, f"Bearer {token}"):
                return 401, "a token is required: Authorization: Bearer TOKEN"
        return None


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


async def _send_json(send: Callable[[dict[str, Any]], Awaitable[None]], status: int, reason: str) -> None:
    body = json.dumps({"error": reason}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="kvstore"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ApiError(Exception):
    """A request the API refuses: its status and reason become the JSON error response."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _b64(value: object, what: str) -> bytes:
    """``value`` (base64 text) decoded; ``ApiError`` 400 naming ``what`` otherwise."""
    if value is None:
        raise ApiError(400, f"{what} is required (base64)")
    if not isinstance(value, str):
        raise ApiError(400, f"{what} must be base64 text")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ApiError(400, f"{what} is not valid base64") from None


def _b64_or_none(value: object, what: str) -> bytes | None:
    return None if value is None else _b64(value, what)


def _enc(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def create_app(settings: Settings) -> Starlette:
    """The server's ASGI app: it opens the KV at start-up and closes it at shutdown."""
    api = _Api(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        config = attrs.evolve(settings.config, read_only=not settings.writable)
        api.kv = await AsyncKV.open(settings.path, config)
        try:
            yield
        finally:
            await api.kv.close()

    routes = [
        Route("/", api.page),
        Route("/metrics", api.metrics),
        Route("/api/get", api.get),
        Route("/api/scan", api.scan),
        Route("/api/stats", api.stats),
        Route("/api/collections", api.collections),
        Route("/api/trace", api.trace),
        Route("/api/put", api.put, methods=["POST"]),
        Route("/api/delete", api.delete, methods=["POST"]),
        Route("/api/delete-range", api.delete_range, methods=["POST"]),
        Route("/api/flush", api.flush, methods=["POST"]),
        Route("/api/compact", api.compact, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: _http_error, Exception: _internal_error})
    app.add_middleware(Guard, settings=settings)
    return app


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("request %s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"error": "internal error; the server's log has the details"}, status_code=500)


class _Api:
    """The routes, over one ``AsyncKV``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.kv: AsyncKV | None = None

    def _kv(self) -> AsyncKV:
        if self.kv is None:
            raise ApiError(503, "the database is not open")
        return self.kv

    def _space(self, name: object) -> Any:
        """The KV, or its collection ``name``: ``ApiError`` 400 for a bad name."""
        kv = self._kv()
        if name is None or name == "":
            return kv
        if not isinstance(name, str):
            raise ApiError(400, "collection must be a string")
        try:
            return kv.collection(name)
        except (TypeError, ValueError) as exc:
            raise ApiError(400, f"collection: {exc}") from None

    async def _body(self, request: Request) -> dict[str, Any]:
        self._check_writable()
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "the body must be a JSON object") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object")
        return body

    async def page(self, request: Request) -> Response:
        html = importlib.resources.files("kvstore").joinpath("dashboard.html").read_text(encoding="utf-8")
        return HTMLResponse(html, headers={"content-security-policy": "default-src 'self'; script-src "
                                           "'unsafe-inline'; style-src 'unsafe-inline'; img-src data:",
                                           "x-frame-options": "DENY"})

    async def metrics(self, request: Request) -> Response:
        return await _answer(self._metrics)

    async def _metrics(self) -> Response:
        text = await self._kv().metrics_text()
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def get(self, request: Request) -> Response:
        return await _answer(self._get, request)

    async def _get(self, request: Request) -> Response:
        key = _b64(request.query_params.get("key"), "key")
        space = self._space(request.query_params.get("collection"))
        value = await space.get(key)
        if value is None:
            raise ApiError(404, "no such key")
        return JSONResponse({"key": _enc(key), "value": _enc(value), "ttl": await space.ttl(key)})

    async def scan(self, request: Request) -> Response:
        return await _answer(self._scan, request)

    async def _scan(self, request: Request) -> Response:
        q = request.query_params
        start, end = _b64_or_none(q.get("start"), "start"), _b64_or_none(q.get("end"), "end")
        prefix = _b64_or_none(q.get("prefix"), "prefix")
        after = _b64_or_none(q.get("after"), "after")
        reverse = _flag(q.get("reverse"), "reverse")
        limit = _limit(q.get("limit"))
        if after is not None:  # the page after the key ``after``, in the direction of travel
            if reverse:
                end = after if end is None else min(end, after)
            else:
                start = after + b"\x00" if start is None else max(start, after + b"\x00")
        space = self._space(q.get("collection"))
        rows = []
        async with space.scan(start, end, prefix=prefix, reverse=reverse) as scan:
            async for row in scan:
                rows.append(row)
                if len(rows) > limit:
                    break
        more = len(rows) > limit
        rows = rows[:limit]
        return JSONResponse({"items": [{"key": _enc(k), "value": _enc(v)} for k, v in rows],
                             "next": _enc(rows[-1][0]) if more else None})

    async def stats(self, request: Request) -> Response:
        return await _answer(self._stats)

    async def _stats(self) -> Response:
        kv = self._kv()
        stats = await kv.stats()
        tree = jsonable(stats_tree(stats, self.settings.path))
        metrics = kv.sync._metrics
        tree["latency"] = {name: {"count": lat.count, "sum_seconds": lat.sum_ns / 1e9}
                           for name, lat in (("get", metrics.get), ("commit", metrics.commit),
                                             ("fsync", metrics.fsync), ("flush", metrics.flush),
                                             ("merge", metrics.merge))}
        tree["counters"] = {"gets": stats.gets, "commits": stats.commits, "conflicts": stats.conflicts,
                            "bloom_negatives": stats.bloom_negatives,
                            "bloom_false_positives": stats.bloom_false_positives}
        config = kv.sync._config
        tree["config"] = {"memtable_size": config.memtable_size, "cache_size": config.cache_size,
                          "writable": self.settings.writable}
        return JSONResponse(tree)

    async def collections(self, request: Request) -> Response:
        return await _answer(self._collections)

    async def _collections(self) -> Response:
        kv = self._kv()
        names = await kv._runner.run(kv.sync.collections)
        return JSONResponse({"collections": names})

    async def trace(self, request: Request) -> Response:
        return await _answer(self._trace, request)

    async def _trace(self, request: Request) -> Response:
        key = _b64(request.query_params.get("key"), "key")
        collection = request.query_params.get("collection") or None
        self._space(collection)
        traced = await self._kv().trace(key, collection=collection)
        return JSONResponse(jsonable(traced.as_dict()))

    async def put(self, request: Request) -> Response:
        return await _answer(self._put, request)

    async def _put(self, request: Request) -> Response:
        body = await self._body(request)
        key, value = _b64(body.get("key"), "key"), _b64(body.get("value"), "value")
        ttl = body.get("ttl")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float))):
            raise ApiError(400, "ttl must be a number of seconds")
        await self._space(body.get("collection")).set(key, value, ttl=ttl)
        return JSONResponse({"ok": True})

    async def delete(self, request: Request) -> Response:
        return await _answer(self._delete, request)

    async def _delete(self, request: Request) -> Response:
        body = await self._body(request)
        existed = await self._space(body.get("collection")).delete(_b64(body.get("key"), "key"))
        return JSONResponse({"existed": existed})

    async def delete_range(self, request: Request) -> Response:
        return await _answer(self._delete_range, request)

    async def _delete_range(self, request: Request) -> Response:
        body = await self._body(request)
        start, end = _b64(body.get("start"), "start"), _b64(body.get("end"), "end")
        await self._space(body.get("collection")).delete_range(start, end)
        return JSONResponse({"ok": True})


    async def flush(self, request: Request) -> Response:
        return await _answer(self._work, request, False)

    async def compact(self, request: Request) -> Response:
        return await _answer(self._work, request, True)

    async def _work(self, request: Request, merge: bool) -> Response:
        """Flush the memtable, or merge by the policy (``{"full": true}``: into one table)."""
        if await request.body():
            body = await self._body(request)
        else:
            self._check_writable()
            body = {}
        kv = self._kv()
        if merge:
            await kv.compact(full=body.get("full") is True)
        else:
            await kv.flush()
        return JSONResponse({"ok": True})

    def _check_writable(self) -> None:
        """``ApiError`` 403 unless the server was started ``--writable``."""
        if not self.settings.writable:
            raise ApiError(403, "this server is read-only: start it with --writable to change data")


def _flag(value: str | None, what: str) -> bool:
    if value in (None, "", "false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise ApiError(400, f"{what} must be true or false")


def _limit(value: str | None) -> int:
    if value is None or value == "":
        return PAGE
    if not value.isdigit() or int(value) < 1:
        raise ApiError(400, "limit must be a whole number of rows above 0")
    if int(value) > MAX_PAGE:
        raise ApiError(413, f"limit over {MAX_PAGE} rows")
    return int(value)


async def _answer(handler: Callable[..., Awaitable[Response]], *args: Any) -> Response:
    """``handler(*args)``, its refusals and the engine's errors as JSON error responses."""
    try:
        return await handler(*args)
    except ApiError as exc:
        return JSONResponse({"error": exc.reason}, status_code=exc.status)
    except (TypeError, ValueError, KeyOrValueTooLargeError) as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    except ReadOnlyError as exc:
        return JSONResponse({"error": str(exc)}, status_code=403)
    except (ClosedError, FailedError) as exc:
        return JSONResponse({"error": str(exc)}, status_code=503)


def serve(settings: Settings, announce: Callable[[str], None]) -> None:
    """Serve until SIGINT or SIGTERM, then close the KV (its lock released) and return.  The socket is
    bound first (``port`` 0: any free port), and ``announce`` told the URL before the first request."""
    import asyncio
    import socket

    import uvicorn

    family = socket.AF_INET6 if ":" in settings.host.strip("[]") else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on such sockets, and without it a response written
    # in two parts waits for the client's delayed ACK (40 ms a request on a kept-alive connection)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((settings.host.strip("[]"), settings.port))
    port = sock.getsockname()[1]
    settings = attrs.evolve(settings, port=port)
    app = create_app(settings)
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False, server_header=False)
    server = uvicorn.Server(config)

    async def run() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started:
            announce(f"http://{_bracketed(settings.host)}:{port}/")
        await task

    try:
        asyncio.run(run())
    finally:
        sock.close()
