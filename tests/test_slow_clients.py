"""Sixty stalled uploads against the real server (`python app.py`): they cost bounded body readers, never inference
places, so a complete request from another client is served while they stall; the readers they hold answer 408 at
the body deadline and the excess is refused at once (429/503 with Retry-After), which bounds their memory."""
from __future__ import annotations

import io
import socket
import time
from collections import Counter

import pytest
from PIL import Image

from conftest import ASTRONAUT_FACE
from test_server import serving

STALLERS = 60
READERS, PER_CLIENT = 16, 4  # EMOTION_BODY_READERS, EMOTION_BODY_READERS_PER_CLIENT
ADDRESSES = [f"127.0.0.{i}" for i in range(2, 8)]  # six stalling clients (all of 127/8 is loopback on Linux)
DEADLINE_S = 2.5  # EMOTION_BODY_TIMEOUT (and the idle timeout): short, so the test ends by itself in seconds
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
                 EMOTION_BODY_READERS_PER_CLIENT=str(PER_CLIENT), EMOTION_WORKERS="1", EMOTION_QUEUE="4") as served:
        yield served


@pytest.fixture(scope="module")
def face_jpeg(astronaut) -> bytes:
    x, y, w, h = ASTRONAUT_FACE
    buf = io.BytesIO()
    Image.fromarray(astronaut).crop((x - 40, y - 40, x + w + 40, y + h + 40)).save(buf, format="JPEG")
    return buf.getvalue()  # a few KB: the whole request leaves in one send


def connect(url: str, source: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10, source_address=(source, 0))


def stall(url: str, source: str, kind: str) -> socket.socket:
    path, ctype, start = STALLED[kind]
    sock = connect(url, source)
    sock.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: " + ctype +
                 b"\r\nContent-Length: 100000\r\n\r\n" + start)
    return sock


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


def status(response: bytes) -> int | None:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else None


def first_answer(socks: list[socket.socket], seconds: float) -> None:
    """Waits until one stalled client has an answer (then the readers are full) or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for sock in socks:
            sock.setblocking(False)
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    return
            except BlockingIOError:
                pass
            finally:
                sock.setblocking(True)
        time.sleep(0.05)


def assert_bounded(statuses: Counter, stallers: int, readers: int) -> None:
    """Every stalled client was answered; `readers` held bodies to the deadline (408), and at most as many more
    were read for a moment (a trial, refused after a second, or at the deadline on a slow machine): the rest were
    refused at once, so memory never held more than 2 x `readers` bodies."""
    assert sum(statuses.values()) == stallers and set(statuses) <= {408, 429, 503}, statuses
    assert readers <= statuses[408] <= 2 * readers, statuses
    assert statuses[429] + statuses[503] >= stallers - 2 * readers, statuses


@pytest.mark.parametrize("kind", list(STALLED))
def test_a_complete_request_is_served_while_sixty_uploads_stall(app_process, face_jpeg, kind):
    url, proc = app_process
    stallers = [stall(url, ADDRESSES[i % len(ADDRESSES)], kind) for i in range(STALLERS)]
    try:
        first_answer(stallers, DEADLINE_S + 5)
        with connect(url, "127.0.0.1") as sock:  # another client, its whole request in one send
            sock.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nConnection: close\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(face_jpeg) + face_jpeg)
            served = answer(sock, 30)
        answers = [answer(sock, DEADLINE_S + 5) for sock in stallers]
    finally:
        for sock in stallers:
            sock.close()
    assert status(served) == 200, served[:300]
    assert b'"faces"' in served
    assert_bounded(Counter(status(a) for a in answers), STALLERS, READERS)
    refused = [a for a in answers if status(a) in (429, 503)]
    assert all(b"retry-after: 2" in a.lower() and b'"error"' in a for a in refused), refused[:1]
    assert proc.poll() is None


def test_one_address_holds_at_most_its_share_of_the_readers(app_process, face_jpeg):
    url, _ = app_process
    stallers = [stall(url, "127.0.0.9", "predict") for _ in range(3 * PER_CLIENT)]
    try:
        answers = [answer(sock, DEADLINE_S + 5) for sock in stallers]
    finally:
        for sock in stallers:
            sock.close()
    statuses = Counter(status(a) for a in answers)
    assert_bounded(statuses, 3 * PER_CLIENT, PER_CLIENT)
    assert set(statuses) <= {408, 429}, statuses  # 429: this client's own share is taken
    assert all(b"finish those first" in a for a in answers if status(a) == 429)
