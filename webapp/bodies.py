"""Request bodies: the one reader the REST routes share, and a bound on the bodies still arriving.

A request takes an inference place only once its body is complete and decoded. Until then it costs memory, not
inference capacity, and that is bounded separately by `BodyReaders`, in front of every route (REST and Gradio's
uploads and queue events): at most `body_readers` bodies may be arriving at once, and at most
`body_readers_per_client` from one client address (EMOTION_BODY_READERS, EMOTION_BODY_READERS_PER_CLIENT). A
request whose body came whole with its headers needs no reader at all; one that finds the readers full is still
read if its body arrives within GRACE_S (these trials are bounded the same way), and refused with 503 (429 when its
own address holds its share) if not. So when the readers are full, the connection refused is the newest stalled
one, never a complete request, and the readers already held run until their body arrives or the server's body
deadline answers them 408 (webapp/server.py).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from emotion import EmotionError

log = logging.getLogger(__name__)

GRACE_S = 1.0  # a request that finds the readers full may still finish its body in this time (a photo on a LAN)
RETRY_AFTER_S = 2
NO_BODY = ("GET", "HEAD", "OPTIONS", "TRACE")


class BodyReaders:
    """ASGI middleware: bounds the requests whose bodies are still arriving, in total and per client address."""

    def __init__(self, app: Any, total: int, per_client: int):
        self.app, self.total, self.per_client = app, total, per_client
        self.held: dict[str, int] = {}  # client address -> bodies it is sending under a reader
        self.trials: dict[str, int] = {}  # the same past the limit, each read for at most GRACE_S (same bounds)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in NO_BODY:
            await self.app(scope, receive, send)
            return
        gate = _Gate(self, (scope.get("client") or ("?", 0))[0])
        state = {"started": False, "refused": False}

        async def gated_receive() -> dict:
            if state["refused"]:
                return {"type": "http.disconnect"}
            try:
                return await gate.receive(receive)
            except _Refused as e:
                state["refused"] = True
                log.info("refused a %s %s from %s: %s", scope["method"], scope["path"], gate.client, e)
                if not state["started"]:
                    # Connection: close, as the rest of the body will not be read
                    await JSONResponse({"error": str(e)}, e.status, headers={
                        "Retry-After": str(RETRY_AFTER_S), "Connection": "close"})(scope, receive, send)
                return {"type": "http.disconnect"}  # the app sees a client that left

        async def guarded_send(message: dict) -> None:
            if not state["refused"]:
                state["started"] = True
                await send(message)

        try:
            await self.app(scope, gated_receive, guarded_send)
        except Exception:
            if not state["refused"]:
                raise  # a real failure: let the server log it
        finally:
            gate.release()

    def take(self, client: str) -> str:
        """A reader for `client` ("held"), else a short trial ("trial"); _Refused when both are full."""
        for kind, count in (("held", self.held), ("trial", self.trials)):
            if sum(count.values()) < self.total and count.get(client, 0) < self.per_client:
                count[client] = count.get(client, 0) + 1
                return kind
        raise self.refusal(client)

    def give_back(self, client: str, kind: str) -> None:
        count = self.held if kind == "held" else self.trials
        count[client] -= 1
        if not count[client]:
            del count[client]

    def refusal(self, client: str) -> "_Refused":
        if self.held.get(client, 0) >= self.per_client:
            return _Refused(429, f"this address is already sending {self.per_client} request bodies: finish "
                                 f"those first, or retry in {RETRY_AFTER_S} s")
        return _Refused(503, f"the server is already receiving {self.total} request bodies: retry in "
                             f"{RETRY_AFTER_S} s")


class _Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class _Gate:
    """One request's body: no reader while it arrives whole, a held reader or a timed trial while it does not."""

    def __init__(self, readers: BodyReaders, client: str):
        self.readers, self.client = readers, client
        self.kind: str | None = None  # None (first message not yet in), "held", "trial", or "done"
        self.deadline = 0.0

    async def receive(self, receive: Callable[[], Any]) -> dict:
        if self.kind == "done":
            return await receive()  # after the body: disconnect notifications
        if self.kind == "trial":
            try:
                message = await asyncio.wait_for(receive(), max(0.0, self.deadline - _now()))
            except asyncio.TimeoutError:
                raise self.readers.refusal(self.client) from None
        else:
            message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.release()  # the body is complete (or the client left): no longer a reader
        elif self.kind is None:
            self.kind = self.readers.take(self.client)
            self.deadline = _now() + GRACE_S
        return message

    def release(self) -> None:
        if self.kind in ("held", "trial"):
            self.readers.give_back(self.client, self.kind)
        self.kind = "done"


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
