"""Request bodies: the one reader the REST routes share, and a bound on the bodies still arriving.

A request takes an inference place only once its body is complete and decoded. Until then it costs memory, not
inference capacity, and that is bounded separately by `BodyReaders`, in front of every route (REST and Gradio's
uploads and queue events): at most `body_readers` bodies may be arriving at once, and at most
`body_readers_per_client` from one client (EMOTION_BODY_READERS, EMOTION_BODY_READERS_PER_CLIENT; the client is the
connection's address, or the address a trusted proxy names: FORWARDED_ALLOW_IPS, webapp/server.py).

Behind a proxy every visitor may share one address, so bodies that are not arriving must never lock out one that
is. A request whose body came whole with its headers needs no reader. One that needs a reader when none is free
takes the reader of the request whose client has kept the app waiting longest, if for STALLED_S or more (that
request is answered 408 and its connection closed); failing that it is read on a trial (trials are bounded the
same way; when they are full, the trial whose client was heard from longest ago gives way, with a 408), and the
trial turns into a reader as soon as one is free or stalled. A trial that after GRACE_S has neither its whole body
nor a reader is refused with 503 (429 when its client holds its share) and Retry-After: every reader then holds a
body that is arriving. So a complete request is never refused for bodies that are not arriving, at most 2 x
`body_readers` bodies are in memory, and the readers kept run until their body arrives or the server's body
deadline answers 408 (webapp/server.py).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from emotion import EmotionError

log = logging.getLogger(__name__)

GRACE_S = 1.0  # a request that finds no reader free may still finish its body in this time (a photo on a LAN)
STALLED_S = 1.0  # a reader whose client has sent nothing for this long goes to a newcomer that needs one
RETRY_AFTER_S = 2
NO_BODY = ("GET", "HEAD", "OPTIONS", "TRACE")


class Refusal(Exception):
    """An answer that a middleware gives in the app's place while the body arrives (see `answer_for_app`)."""

    def __init__(self, status: int, message: str, retry_after: bool = False):
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


async def answer_for_app(app: Any, scope: dict, receive: Callable[[], Awaitable[dict]], send: Any) -> None:
    """Runs `app` with `receive`, which may raise Refusal mid-body: the refusal is then the answer (unless the app
    had started its own), with Connection: close as the rest of the body goes unread; the app sees a client that
    left, and what it sends or raises after that is dropped. BodyReaders and the Gradio guard share this."""
    refused = started = False

    async def checked_receive() -> dict:
        nonlocal refused
        if refused:
            return {"type": "http.disconnect"}
        try:
            return await receive()
        except Refusal as e:
            refused = True
            log.info("answered %s %s from %s with %d: %s", scope["method"], scope["path"], client_of(scope),
                     e.status, e)
            if not started:
                headers = {"Connection": "close", **({"Retry-After": str(RETRY_AFTER_S)} if e.retry_after else {})}
                await JSONResponse({"error": str(e)}, e.status, headers=headers)(scope, receive, send)
            return {"type": "http.disconnect"}  # the app sees a client that left

    async def guarded_send(message: dict) -> None:
        nonlocal started
        if not refused:
            started = True
            await send(message)

    try:
        await app(scope, checked_receive, guarded_send)
    except Exception:
        if not refused:
            raise  # a real failure: let the server log it


def client_of(scope: dict) -> str:
    """The client's address (after uvicorn's proxy headers middleware: a trusted proxy's X-Forwarded-For)."""
    return (scope.get("client") or ("?", 0))[0]


class BodyReaders:
    """ASGI middleware: bounds the requests whose bodies are still arriving, in total and per client; when a
    newcomer needs a reader, the request whose client has been silent longest gives up its own."""

    def __init__(self, app: Any, total: int, per_client: int):
        self.app, self.total, self.per_client = app, total, per_client
        self.held: set[_Gate] = set()  # requests reading their bodies under a reader
        self.trials: set[_Gate] = set()  # the same past the readers, each for at most GRACE_S (same bounds)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in NO_BODY:
            await self.app(scope, receive, send)
            return
        gate = _Gate(self, client_of(scope))
        try:
            await answer_for_app(self.app, scope, lambda: gate.receive(receive), send)
        finally:
            gate.release()

    def admit(self, gate: "_Gate") -> None:
        """A reader for `gate` (a free one, or one whose client stalled), else a trial (a free one, or the one whose
        client was heard from longest ago: a trial always gives way to a newcomer)."""
        if not self.promote(gate):
            self._make_room(self.trials, gate.client, _idlest_trial)
            self.trials.add(gate)
            gate.kind, gate.deadline = "trial", _now() + GRACE_S

    def promote(self, gate: "_Gate") -> bool:
        """Gives `gate` a reader if one is free or its client has kept the app waiting STALLED_S; False if none."""
        if not self._make_room(self.held, gate.client, _stalled):
            return False
        self.trials.discard(gate)
        self.held.add(gate)
        gate.kind = "held"
        return True

    def _make_room(self, pool: set["_Gate"], client: str, victim: Callable[[list["_Gate"]], "_Gate | None"]) -> bool:
        """True if `pool` has room for one more body from `client`, made if need be by evicting `victim(gates in the
        way)` (its client's own when the client holds its share, else any); False if there is none to evict."""
        mine = [g for g in pool if g.client == client]
        if len(mine) < self.per_client and len(pool) < self.total:
            return True
        chosen = victim(mine if len(mine) >= self.per_client else list(pool))
        if chosen is None:
            return False
        chosen.evict()
        return True

    def refusal(self, client: str) -> Refusal:
        if sum(g.client == client for g in self.held) >= self.per_client:
            return Refusal(429, f"this address is already sending {self.per_client} request bodies: finish those "
                                f"first, or retry in {RETRY_AFTER_S} s", retry_after=True)
        return Refusal(503, f"the server is already receiving {self.total} request bodies: retry in "
                            f"{RETRY_AFTER_S} s", retry_after=True)


class _Gate:
    """One request's body: no reader while it arrives whole, a reader or a timed trial while it does not."""

    def __init__(self, readers: BodyReaders, client: str):
        self.readers, self.client = readers, client
        self.kind: str | None = None  # None (first message not yet in), "held", "trial", "evicted" or "done"
        self.deadline = 0.0  # a trial's end
        self.waiting_since: float | None = None  # while the app waits for the client's next bytes under a reader
        self.last_heard = 0.0  # when the client's last bytes reached the app
        self.evicted = asyncio.get_running_loop().create_future()

    async def receive(self, receive: Callable[[], Awaitable[dict]]) -> dict:
        if self.kind == "done":
            return await receive()  # after the body: disconnect notifications
        message = await (receive() if self.kind is None else self._next(receive))
        self.last_heard = _now()
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.release()  # the body is complete (or the client left): no longer a reader
        elif self.kind is None:
            self.readers.admit(self)
        elif self.kind == "trial":
            self.readers.promote(self)
        return message

    async def _next(self, receive: Callable[[], Awaitable[dict]]) -> dict:
        """The client's next message, unless its reader goes to a newcomer first (408) or, on a trial, GRACE_S
        pass with no reader for it (429/503)."""
        message = asyncio.ensure_future(receive())
        self.waiting_since = _now()
        try:
            while True:
                timeout = None if self.kind == "held" else max(0.0, self.deadline - _now())
                await asyncio.wait((message, self.evicted), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if self.evicted.done():
                    raise Refusal(408, "the request body stopped arriving while other requests needed its reader: "
                                       "send the whole request promptly")
                if message.done():
                    return message.result()
                if not self.readers.promote(self):  # the trial is over
                    raise self.readers.refusal(self.client)
        finally:
            self.waiting_since = None
            message.cancel()  # a no-op once it is done

    def evict(self) -> None:
        """Gives up this request's reader or trial: it is answered 408 as soon as it next waits for its client."""
        log.info("a body from %s stopped arriving: its %s goes to a newcomer", self.client, self.kind)
        (self.readers.held if self.kind == "held" else self.readers.trials).discard(self)
        self.kind = "evicted"
        self.evicted.set_result(None)

    def release(self) -> None:
        self.readers.held.discard(self)
        self.readers.trials.discard(self)
        self.kind = "done"


def _stalled(gates: list["_Gate"]) -> "_Gate | None":
    """The reader whose client has kept the app waiting longest, if for STALLED_S or more (the time the app takes
    with a chunk, say writing it to disk under load, is not the client's silence)."""
    idlest = min((g for g in gates if g.waiting_since is not None), key=lambda g: g.waiting_since, default=None)
    return idlest if idlest is not None and _now() - idlest.waiting_since >= STALLED_S else None


def _idlest_trial(gates: list["_Gate"]) -> "_Gate | None":
    """The trial whose client's bytes last arrived longest ago, among those the app is waiting on if any is (one
    that the app is busy with, say writing its chunk to disk, is more likely sending than one that owes bytes)."""
    waiting = [g for g in gates if g.waiting_since is not None]
    return min(waiting or gates, key=lambda g: g.last_heard, default=None)


def _now() -> float:
    return asyncio.get_running_loop().time()


# ---------------------------------------------------------------------------------------------- the one body reader
async def read_body(request: Request, limit: int, too_large: Callable[[int, bool], EmotionError]) -> bytes:
    """The whole body, refused with `too_large(size, at_least)` (413) as soon as it is known to pass `limit`, before
    anything is decoded; a client gone before the end is an EmotionError that nobody reads."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(int(declared), False)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large(size, True)
            chunks.append(chunk)
    except ClientDisconnect:  # gone, cut off by the body deadline, or refused by BodyReaders
        raise EmotionError("the client disconnected before sending the whole body") from None
    return b"".join(chunks)


async def read_form(request: Request, body: bytes, max_files: int, max_fields: int, how_to_send: str) -> Any:
    """`body` (already read) parsed as the request's form; EmotionError (400) naming `how_to_send` if it cannot be."""
    async def replay() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        return await Request(request.scope, replay).form(max_files=max_files, max_fields=max_fields)
    except Exception as e:  # noqa: BLE001 - starlette raises several kinds (HTTPException, ValueError, ...)
        detail = getattr(e, "detail", None) or str(e)
        raise EmotionError(f"the form body could not be parsed ({detail}): {how_to_send}") from None
