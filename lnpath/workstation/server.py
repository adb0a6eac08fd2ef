"""The workstation's web server: a Starlette app on uvicorn, local and token-guarded.

Like Jupyter, each launch draws a secret token; every request must carry it (in the URL once,
after which a cookie holds it, or in an ``X-Lnpath-Token`` header), otherwise 403. Requests that
write (save, sign-out) need the header, which another site's page cannot set, so a cookie alone
never writes. The server binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import errno
import html
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from lnpath.core.errors import InputError, LnpathError
from lnpath.scoring.biopsy import IF_INTENSITIES, IF_LABELS, STAIN_LABELS
from lnpath.workstation.edits import MAX_BODY, PageEdits, TooLarge, base_of, text_field
from lnpath.workstation.records import colours, lesion_labels
from lnpath.workstation.session import ReadOnly, ResultSession, StaleRevision

LOG = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
TOKEN_HEADER = "x-lnpath-token"
STATIC = resources.files("lnpath.workstation") / "static"

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]]], Any]


class TokenGuard:
    """ASGI middleware: 403 unless the request carries the launch token."""

    def __init__(self, app: ASGIApp, token: str, cookie: str) -> None:
        self.app = app
        self.token = token
        self.cookie = cookie

    def _given(self, scope: Scope) -> tuple[str | None, str | None, str | None]:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        cookie = None
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == self.cookie:
                cookie = value
        return (query.get("token") or [None])[0], cookie, headers.get(TOKEN_HEADER)

    def _ok(self, value: str | None) -> bool:
        return value is not None and secrets.compare_digest(value.encode(), self.token.encode())

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        in_query, in_cookie, in_header = self._given(scope)
        writes = scope["method"] not in ("GET", "HEAD")
        if self._ok(in_query) and not writes:
            # swap the URL token for a cookie, so it leaves the address bar and the history
            rest = {
                k: v for k, v in parse_qs(scope["query_string"].decode()).items() if k != "token"
            }
            target = scope["path"] + (f"?{urlencode(rest, doseq=True)}" if rest else "")
            response: Response = RedirectResponse(target, status_code=303)
            response.set_cookie(self.cookie, self.token, httponly=True, samesite="strict")
        elif (writes and self._ok(in_header)) or (
            not writes and (self._ok(in_cookie) or self._ok(in_header))
        ):
            await self.app(scope, receive, send)
            return
        else:
            response = PlainTextResponse(
                "403: this lnpath workstation needs its token; open the URL it printed", 403
            )
        await response(scope, receive, send)


def _error(exc: Exception) -> JSONResponse:
    if isinstance(exc, StaleRevision):
        status = 409
    elif isinstance(exc, TooLarge):
        status = 413
    elif isinstance(exc, ReadOnly):
        status = 423
    else:
        status = 400
    return JSONResponse({"error": str(exc)}, status_code=status)


def _page(token: str) -> str:
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    return page.replace("{{TOKEN}}", html.escape(token, quote=True))


def build_app(sessions: Sequence[ResultSession], token: str, cookie: str) -> Any:
    """The ASGI app serving ``sessions`` (the results opened, in the order given).

    Long because it declares the app's routes, each a few lines, beside the token check they share.
    """

    def session(request: Request) -> ResultSession:
        index = int(request.path_params["index"])
        if not 0 <= index < len(sessions):
            raise InputError(f"no result {index} (this workstation has {len(sessions)})")
        return sessions[index]

    def index_page(request: Request) -> Response:
        return Response(
            _page(token),
            media_type="text/html",
            headers={"Cache-Control": "no-store", "Content-Security-Policy": CSP},
        )

    def results(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "results": [
                    {"index": i, "name": s.name, "folder": str(s.folder), "read_only": s.read_only}
                    for i, s in enumerate(sessions)
                ],
                "lesions": lesion_labels(),
                "colours": colours(),
                # the stains and intensities normalise_biopsy takes, so the page offers no other
                "if_stains": [{"key": k, "label": v} for k, v in IF_LABELS.items()],
                "if_intensities": list(IF_INTENSITIES),
                "stains": [{"key": k, "label": v} for k, v in STAIN_LABELS.items()],
            }
        )

    def state(request: Request) -> JSONResponse:
        try:
            return JSONResponse(session(request).state())
        except LnpathError as exc:
            return _error(exc)

    def dzi(request: Request) -> Response:
        try:
            return Response(session(request).tiles.dzi(), media_type="application/xml")
        except InputError as exc:
            return PlainTextResponse(str(exc), 404)

    def tile(request: Request) -> Response:
        p = request.path_params
        try:
            data = session(request).tiles.tile(int(p["level"]), int(p["col"]), int(p["row"]))
        except (KeyError, InputError):
            return PlainTextResponse("no such tile", 404)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    def crop(request: Request) -> Response:
        try:
            data = session(request).crop(int(request.path_params["gid"]))
        except (KeyError, OSError, InputError):
            return PlainTextResponse("no crop", 404)
        return Response(data, media_type="image/jpeg")

    async def _body(request: Request) -> Any:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY:
            raise TooLarge(f"request body of {declared} bytes is over {MAX_BODY} bytes")
        data = bytearray()
        async for chunk in request.stream():  # a body sent without its length is counted too
            data += chunk
            if len(data) > MAX_BODY:
                raise TooLarge(f"request body is over {MAX_BODY} bytes")
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"request body is not JSON ({exc})") from None

    async def preview(request: Request) -> JSONResponse:
        from starlette.concurrency import run_in_threadpool

        try:
            edits = PageEdits.parse(await _body(request))
            return JSONResponse(await run_in_threadpool(session(request).preview, edits))
        except LnpathError as exc:
            return _error(exc)

    async def save(request: Request) -> JSONResponse:
        from starlette.concurrency import run_in_threadpool

        try:
            edits = PageEdits.parse(await _body(request))
            return JSONResponse(await run_in_threadpool(session(request).save, edits))
        except LnpathError as exc:
            return _error(exc)

    async def confirm(request: Request) -> JSONResponse:
        from starlette.concurrency import run_in_threadpool

        try:
            body = await _body(request)
            if not isinstance(body, dict):
                raise InputError("confirm: expected a JSON object")
            s = session(request)
            out = await run_in_threadpool(
                s.confirm,
                base_of(body),
                text_field(body, "pathologist"),
                text_field(body, "note") or None,
            )
            return JSONResponse(out)
        except LnpathError as exc:
            return _error(exc)

    async def addendum(request: Request) -> JSONResponse:
        from starlette.concurrency import run_in_threadpool

        try:
            body = await _body(request)
            if not isinstance(body, dict):
                raise InputError("addendum: expected a JSON object")
            s = session(request)
            out = await run_in_threadpool(
                s.addendum,
                base_of(body),
                text_field(body, "pathologist"),
                text_field(body, "text"),
            )
            return JSONResponse(out)
        except LnpathError as exc:
            return _error(exc)

    def compare(request: Request) -> JSONResponse:
        from lnpath.workflow.compare import compare as compare_results

        try:
            chosen = [
                int(request.query_params.get(k, d)) for k, d in (("baseline", 0), ("followup", 1))
            ]
            if not all(0 <= i < len(sessions) for i in chosen):  # -1 was the last one opened
                raise IndexError
            a, b = (sessions[i] for i in chosen)
            preset = request.query_params.get("preset", "lnhr_default")
            response = compare_results(a.folder, b.folder, preset=preset)
        except (IndexError, ValueError):
            return _error(InputError("compare: give two of the results opened"))
        except LnpathError as exc:
            return _error(exc)
        return JSONResponse(json.loads(json.dumps(response.to_dict(), default=str)))

    routes = [
        Route("/", index_page),
        Route("/api/results", results),
        Route("/api/r/{index:int}/state", state),
        Route("/api/r/{index:int}/slide.dzi", dzi),
        Route("/api/r/{index:int}/slide_files/{level:int}/{col:int}_{row:int}.jpeg", tile),
        Route("/api/r/{index:int}/crop/{gid:int}.jpg", crop),
        Route("/api/r/{index:int}/preview", preview, methods=["POST"]),
        Route("/api/r/{index:int}/save", save, methods=["POST"]),
        Route("/api/r/{index:int}/confirm", confirm, methods=["POST"]),
        Route("/api/r/{index:int}/addendum", addendum, methods=["POST"]),
        Route("/api/compare", compare),
        Mount("/static", app=StaticFiles(directory=str(STATIC)), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={Exception: _unexpected})
    return TokenGuard(app, token, cookie)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    """A bug, not bad input: the page shows one line (Starlette's default is a bare "Internal
    Server Error"); uvicorn logs the traceback in the workstation's terminal."""
    LOG.error("workstation: %s %s failed: %r", request.method, request.url.path, exc)
    return JSONResponse(
        {
            "error": f"the workstation failed ({type(exc).__name__}: {str(exc)[:200]}); reload "
            "to see what is saved; the details are in the terminal that started it"
        },
        status_code=500,
    )


#: Scripts and styles only from the server itself; images also as data: (OpenSeadragon's).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def _free_port(host: str, port: int) -> socket.socket:
    """Bind the listening socket now, so a port in use is a one-line error before anything else."""
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise InputError(f"workstation: port {port!r} must be a whole number from 0 to 65535")
    if not isinstance(host, str) or not host:
        raise InputError(f"workstation: host {host!r} must be an interface name or address")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
    # and without it every keep-alive response waits ~40 ms for the client's delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    if os.name != "nt":
        # a restart on the same port must not wait out the last run's TIME_WAIT connections
        # (a minute of "address in use"), as uvicorn's own sockets do; a port another server
        # listens on is still refused. Not on Windows, where it would let two servers share one
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = (  # an unknown host or another machine's address is no port problem
            "is another server using the port? Choose another with --port (0 = any free port)"
            if exc.errno in (errno.EADDRINUSE, errno.EACCES)
            else "--host must name an address of this computer (default 127.0.0.1)"
        )
        raise InputError(
            f"workstation: cannot listen on {host}:{port} ({exc.strerror or exc}); {hint}"
        ) from None
    sock.listen(64)
    return sock


def _once(results: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The result folders in the order given, each once (by its resolved path): one folder open
    twice would be two queue entries, each saving over the other's revision."""
    seen: dict[Path, Path] = {}
    for folder in map(Path, results):
        resolved = folder.resolve()
        if resolved in seen:
            LOG.warning("workstation: %s was given twice; it is opened once", resolved)
        else:
            seen[resolved] = folder
    return list(seen.values())


class Workstation:
    """The opened results and their server; :meth:`start` serves in a thread, :meth:`serve` blocks.

    Args:
        results: result folders written by :func:`lnpath.score_slide` (one or more).
        slides: slide files for results whose slide moved (matched by fingerprint).
        host: interface to listen on; anything but loopback is reachable from the network (the
            token still guards it).
        port: port to listen on; 0 picks a free one.

    Raises:
        ResultError: a folder is not an lnpath result.
        SlideError: a result's slide is missing or changed (the message says which, and --slide).
        InputError: the port is in use.
    """

    def __init__(
        self,
        results: Sequence[str | os.PathLike[str]],
        slides: Sequence[str | os.PathLike[str]] = (),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if not results:
            raise InputError("workstation: give at least one result folder")
        candidates = [Path(s) for s in slides]
        for path in candidates:
            if not path.is_file():
                raise InputError(
                    f"--slide {path}: {'is a folder' if path.is_dir() else 'no such file'}"
                )
        self.sessions: list[ResultSession] = []
        try:
            for folder in _once(results):
                self.sessions.append(ResultSession(folder, candidates))
            self._socket = _free_port(host, port)
        except BaseException:
            self.close()
            raise
        self.host = host
        self.port = int(self._socket.getsockname()[1])
        self.token = secrets.token_urlsafe(32)
        self.app = build_app(self.sessions, self.token, f"lnpath_token_{self.port}")
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The address to open, token included."""
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}/?token={self.token}"

    def _uvicorn(self) -> Any:
        import uvicorn

        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        return self._server

    def serve(self) -> None:
        """Serve until interrupted (Ctrl-C)."""
        try:
            self._uvicorn().run(sockets=[self._socket])
        finally:
            self.close()

    def start(self) -> Workstation:
        """Serve in a background thread; returns once the server accepts connections."""
        server = self._uvicorn()
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise LnpathError("workstation: the server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop a server started with :meth:`start`, and close the slides."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.close()

    def close(self) -> None:
        """Close the slides and the listening socket."""
        for s in self.sessions:
            s.close()
        self.sessions.clear()
        sock = getattr(self, "_socket", None)
        if sock is not None:
            sock.close()

    def __enter__(self) -> Workstation:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
