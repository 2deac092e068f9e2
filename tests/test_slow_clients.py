"""Sixty stalled connections against the real server (`python app.py`), from the honest client's own address (every
visitor behind a proxy has the proxy's) and from others: the honest client is served at once on every route that
takes a body, the stalled ones cost bounded body readers (the idlest goes, with a 408, when a newcomer needs one),
and X-Forwarded-For names the client only when a trusted proxy sends it."""
from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from conftest import ASTRONAUT_FACE
from test_server import ROOT, serving
from webapp import bodies
from webapp.bodies import BodyReaders

STALLERS = 60
READERS, PER_CLIENT = 16, 4  # EMOTION_BODY_READERS, EMOTION_BODY_READERS_PER_CLIENT
PROXY = "127.0.0.1"  # FORWARDED_ALLOW_IPS: its X-Forwarded-For is believed; without one, it is the client itself
OTHERS = [f"127.0.0.{i}" for i in range(2, 8)]  # six other clients (all of 127/8 is loopback on Linux)
UNTRUSTED = "127.0.0.9"
DEADLINE_S = 60  # the body deadlines: long, so that a client made to wait for one would be seen waiting
SETTLED_S = 3.0  # a trial lasts 1 s and a reader is stalled after 1 s silent: then only held readers are left
STALLED = {  # a request head and the first part of its body; each declares 100,000 bytes and sends 1,000
    "predict": (b"/api/predict", b"image/png", b"\x89PNG\r\n\x1a\n" + bytes(992)),
    "predict_video": (b"/api/predict_video", b"video/mp4", bytes(1000)),
    "gradio_upload": (b"/gradio_api/upload", b"multipart/form-data; boundary=xyz",
                      b'--xyz\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
                      b"Content-Type: image/png\r\n\r\n".ljust(1000, b"\0")),
    "queue_event": (b"/gradio_api/queue/join", b"application/json", b'{"data": ["'.ljust(1000, b"A")),
}


@pytest.fixture(scope="module")
def app_process(tiny_model, tmp_path_factory):
    with serving(tiny_model, tmp_path_factory, EMOTION_BODY_TIMEOUT=str(DEADLINE_S),
                 EMOTION_BODY_IDLE_TIMEOUT=str(DEADLINE_S), EMOTION_BODY_READERS=str(READERS),
                 EMOTION_BODY_READERS_PER_CLIENT=str(PER_CLIENT), EMOTION_WORKERS="1", EMOTION_QUEUE="4",
                 FORWARDED_ALLOW_IPS=PROXY) as served:
        yield served


@pytest.fixture(scope="module")
def honest_requests(app_process, tmp_path_factory) -> dict[str, tuple[bytes, bytes, bytes]]:
    """A complete request per route, as (path, content type, body): the astronaut, a short clip of its face, the
    astronaut as a Gradio upload, and a queue join of the photo tab's event."""
    from test_video import write_clip

    import requests

    x, y, w, h = ASTRONAUT_FACE
    head = Image.open(ROOT / "examples" / "astronaut.jpg").crop((x - 30, y - 40, x + w + 30, y + h + 20))
    clip = write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", [head] * 5, fps=5).read_bytes()
    photo = (ROOT / "examples" / "astronaut.jpg").read_bytes()
    upload = (b'--xyz\r\nContent-Disposition: form-data; name="files"; filename="astronaut.jpg"\r\n'
              b"Content-Type: image/jpeg\r\n\r\n" + photo + b"\r\n--xyz--\r\n")
    deps = requests.get(f"{app_process[0]}/config", timeout=30).json()["dependencies"]
    index = next(i for i, d in enumerate(deps) if d.get("api_name") == "predict")
    join = json.dumps({"fn_index": index, "data": [None] * len(deps[index]["inputs"]), "session_hash": "honest",
                       "event_data": None, "trigger_id": None}).encode()
    return {"predict": (b"/api/predict", b"image/jpeg", photo), "predict_video": (b"/api/predict_video",
            b"video/mp4", clip), "gradio_upload": (b"/gradio_api/upload", b"multipart/form-data; boundary=xyz",
            upload), "queue_event": (b"/gradio_api/queue/join", b"application/json", join)}


def connect(url: str, source: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10, source_address=(source, 0))


def stall(url: str, source: str, kind: str, forwarded_for: str | None = None) -> socket.socket:
    """A connection that sends its head and 1,000 bytes of its body, or (mid-headers) half its head, then stops."""
    sock = connect(url, source)
    if kind == "mid-headers":
        sock.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n")
        return sock
    path, ctype, start = STALLED[kind]
    via = b"X-Forwarded-For: %s\r\n" % forwarded_for.encode() if forwarded_for else b""
    sock.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n" + via + b"Content-Type: " + ctype +
                 b"\r\nContent-Length: 100000\r\n\r\n" + start)
    return sock


def send_honestly(url: str, source: str, request: tuple[bytes, bytes, bytes]) -> tuple[bytes, float]:
    """A complete request, its body in two sends 0.2 s apart (so it needs a body reader) -> (answer, seconds)."""
    path, ctype, body = request
    start = time.monotonic()
    with connect(url, source) as sock:
        sock.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: " + ctype + b"\r\nConnection: close"
                     b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:len(body) // 2])
        time.sleep(0.2)
        sock.sendall(body[len(body) // 2:])
        got = answer(sock, 60)
    return got, time.monotonic() - start


def answer(sock: socket.socket, seconds: float) -> bytes:
    """What the server sent before closing the connection (or before `seconds`)."""
    sock.settimeout(seconds)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return got


def answers_so_far(socks: list[socket.socket]) -> list[bytes]:
    """What each connection has been sent by now (b"": nothing yet, its body is still being waited for)."""
    return [answer(sock, 0.01) for sock in socks]


def settled_answers(socks: list[socket.socket]) -> list[bytes]:
    """What each connection has been sent once the server has had SETTLED_S to act; then they are closed."""
    try:
        time.sleep(SETTLED_S)
        return answers_so_far(socks)
    finally:
        close_all(socks)


def status(response: bytes) -> int | None:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else None


def close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


def answered(socks: list[socket.socket], count: int, seconds: float) -> None:
    """Waits until `count` stalled clients have an answer (then the server has taken them all in) or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = 0
        for sock in socks:
            sock.setblocking(False)
            try:
                got += bool(sock.recv(1, socket.MSG_PEEK))
            except BlockingIOError:
                pass
            finally:
                sock.setblocking(True)
        if got >= count:
            return
        time.sleep(0.05)


def assert_bounded(answers: list[bytes], readers: int) -> Counter:
    """Every stalled client was answered with an error (408 when its reader went to a newcomer, 429/503 with
    Retry-After when none could) except those still holding a reader or on a trial: at most 2 x `readers`, which
    bounds the memory that bodies still arriving hold."""
    statuses = Counter(status(a) for a in answers)
    assert set(statuses) <= {None, 408, 429, 503}, statuses
    assert statuses[None] <= 2 * readers, statuses
    assert all(b'"error"' in a for a in answers if a), [a for a in answers if a and b'"error"' not in a][:1]
    assert all(b"retry-after: 2" in a.lower() for a in answers if status(a) in (429, 503))
    return statuses


@pytest.mark.parametrize("where", ["same address", "other addresses"])
@pytest.mark.parametrize("kind", list(STALLED))
def test_a_complete_request_is_served_at_once_while_sixty_uploads_stall(app_process, honest_requests, kind, where):
    url, proc = app_process
    sources = [PROXY] if where == "same address" else OTHERS
    bound = PER_CLIENT if where == "same address" else READERS
    stallers = [stall(url, sources[i % len(sources)], kind) for i in range(STALLERS)]
    try:
        # All in (past the readers and the trials, each newcomer's 408 went to an older one), then the honest one.
        answered(stallers, STALLERS - 2 * bound, 10)
        served, seconds = send_honestly(url, PROXY, honest_requests[kind])
        time.sleep(SETTLED_S)
        answers = answers_so_far(stallers)
    finally:
        close_all(stallers)
    assert status(served) == 200, served[:300]
    assert seconds < 2, f"the complete request took {seconds:.1f} s"
    assert_bounded(answers, bound)
    assert proc.poll() is None


@pytest.mark.parametrize("where", ["same address", "other addresses"])
def test_a_complete_request_is_served_at_once_while_sixty_connections_stall_mid_headers(app_process, honest_requests,
                                                                                       where):
    url, proc = app_process
    sources = [PROXY] if where == "same address" else OTHERS
    stallers = [stall(url, sources[i % len(sources)], "mid-headers") for i in range(STALLERS)]
    try:
        time.sleep(0.5)
        served, seconds = send_honestly(url, PROXY, honest_requests["predict"])
        waiting = answers_so_far(stallers)
    finally:
        close_all(stallers)
    assert status(served) == 200, served[:300]
    assert seconds < 2, f"the complete request took {seconds:.1f} s"
    assert waiting == [b""] * STALLERS  # they hold no reader: only their header deadline (10 s) answers them
    assert proc.poll() is None


def test_a_spoofed_forwarded_for_from_an_untrusted_address_changes_nothing(app_process):
    url, _ = app_process
    answers = settled_answers([stall(url, UNTRUSTED, "predict", forwarded_for=f"198.51.100.{i}")
                               for i in range(3 * PER_CLIENT)])
    # One client whatever the header says: its share held, as many on a trial at most, the rest answered.
    assert_bounded(answers, PER_CLIENT)


def test_a_trusted_proxy_names_its_clients(app_process):
    url, _ = app_process
    # Twelve clients behind the proxy (the address left of them is the client's own claim, not believed), one body
    # each: none is past its share and the readers are not full, so none is answered before its body arrives.
    apart = [stall(url, PROXY, "predict", forwarded_for=f"203.0.113.7, 198.51.100.{i}") for i in range(12)]
    assert settled_answers(apart) == [b""] * 12
    # The same twelve bodies from one client behind the proxy: its share applies.
    one = [stall(url, PROXY, "predict", forwarded_for="203.0.113.7, 198.51.100.1") for _ in range(12)]
    assert_bounded(settled_answers(one), PER_CLIENT)


# ------------------------------------------------------------------------------ the policy, in-process and quick
async def _length_app(scope: dict, receive, send) -> None:
    """Reads the body as the routes do (a client gone before the end gets nothing), answers 200 with its length."""
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size, more = size + len(message.get("body", b"")), message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


class _Request:
    """One POST through `readers` from `address`, its body sent chunk by chunk with `send`."""

    def __init__(self, readers: BodyReaders, address: str):
        self.messages: asyncio.Queue = asyncio.Queue()
        self.status: int | None = None
        scope = {"type": "http", "method": "POST", "path": "/api/predict", "client": (address, 1), "headers": []}
        self.task = asyncio.ensure_future(readers(scope, self.messages.get, self._answer))

    async def _answer(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]

    def send(self, data: bytes = b"x" * 1000, more: bool = True) -> None:
        self.messages.put_nowait({"type": "http.request", "body": data, "more_body": more})


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def _in_bounds(readers: BodyReaders) -> None:
    for pool in (readers.held, readers.trials):
        assert len(pool) <= readers.total
        assert max(Counter(g.client for g in pool).values(), default=0) <= readers.per_client


@pytest.mark.parametrize("where", ["same address", "other addresses"])
def test_a_newcomer_that_sends_takes_the_place_of_the_idlest_stalled_body(where):
    async def run() -> tuple[list[int | None], int | None]:
        readers = BodyReaders(_length_app, total=4, per_client=2)
        stalled = []
        for i in range(20):
            stalled.append(_Request(readers, "10.0.0.1" if where == "same address" else f"10.0.0.{i % 5 + 2}"))
            stalled[-1].send()
            await _settle()
            _in_bounds(readers)
        honest = _Request(readers, "10.0.0.1")
        honest.send()
        await _settle()
        _in_bounds(readers)
        honest.send(more=False)
        await honest.task
        for request in stalled:
            request.messages.put_nowait({"type": "http.disconnect"})
        await asyncio.gather(*(r.task for r in stalled))
        return [r.status for r in stalled], honest.status

    stalled, honest = asyncio.run(run())
    assert honest == 200
    # Held and on trial: 2 + 2 from one address, 4 + 4 in all; every other one went with a 408 to a newcomer.
    kept = 4 if where == "same address" else 8
    assert Counter(stalled) == {408: 20 - kept + 1, None: kept - 1}, Counter(stalled)


def test_a_stalled_reader_goes_to_a_newcomer_and_one_that_sends_does_not(monkeypatch):
    monkeypatch.setattr(bodies, "STALLED_S", 0.2)
    monkeypatch.setattr(bodies, "GRACE_S", 0.5)

    async def run() -> tuple[int | None, ...]:
        readers = BodyReaders(_length_app, total=1, per_client=1)
        stalled = _Request(readers, "10.0.0.1")
        stalled.send()
        await asyncio.sleep(0.3)  # silent past STALLED_S
        sending = _Request(readers, "10.0.0.2")
        sending.send()
        await _settle()
        late = _Request(readers, "10.0.0.3")  # finds the one reader busy with a body that is arriving
        late.send()
        for _ in range(10):  # a chunk every 0.1 s: never silent for STALLED_S
            await asyncio.sleep(0.1)
            sending.send()
        sending.send(more=False)
        await asyncio.gather(stalled.task, sending.task, late.task)
        return stalled.status, sending.status, late.status

    assert asyncio.run(run()) == (408, 200, 503)  # the late one: its trial ran out with no reader free or stalled


def test_the_trusted_proxies_are_checked_and_given_to_uvicorn_as_it_parses_them():
    from webapp.server import server_options
    from webapp.settings import Settings, SettingsError

    assert server_options(Settings())["forwarded_allow_ips"] == ["127.0.0.1", "::1"]  # uvicorn's own default
    given = Settings.from_env({"FORWARDED_ALLOW_IPS": " 10.16.3.80/8, 127.0.0.1 "})
    assert server_options(given)["forwarded_allow_ips"] == ["10.0.0.0/8", "127.0.0.1"]  # uvicorn: strict networks
    assert server_options(given)["proxy_headers"] is True
    assert Settings.from_env({"FORWARDED_ALLOW_IPS": "*"}).trusted_proxies == ["*"]
    for bad in ("proxy.local", "10.0.0.0/8,*", "10.0.0.0/40", ","):
        with pytest.raises(SettingsError, match="FORWARDED_ALLOW_IPS=.* it takes comma-separated IP addresses"):
            Settings.from_env({"FORWARDED_ALLOW_IPS": bad})
