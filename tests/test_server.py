"""The app for real: `python app.py` in a subprocess, called over HTTP, through gradio_client and in Chromium."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests
from PIL import Image

from emotion import LABELS

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
START_TIMEOUT = 600  # seconds: importing gradio alone took 80-240+ s on the shared 2-core machine under load


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def astronaut_file(astronaut, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("upload") / "astronaut.png"
    Image.fromarray(astronaut).save(path)
    return path


@pytest.fixture(scope="module")
def app_process(tiny_model, tmp_path_factory):
    """`python app.py` serving the tiny model on a free loopback port -> (URL, process); its log shown on failure.

    Short read deadlines (1 s headers, 1 s body pauses, 3 s body) so the slow-client tests are quick, and room for
    their 10 stalled bodies from one address (the body-reader bounds are tested in test_slow_clients.py).
    """
    with serving(tiny_model, tmp_path_factory, EMOTION_HEADER_TIMEOUT="1", EMOTION_BODY_IDLE_TIMEOUT="1",
                 EMOTION_BODY_TIMEOUT="3", EMOTION_BODY_READERS_PER_CLIENT="16") as served:
        yield served


@contextlib.contextmanager
def serving(tiny_model: Path, tmp_path_factory, **settings: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """`python app.py` with the tiny model and `settings` (environment variables) -> (URL, process), stopped after."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    env = {**os.environ, "EMOTION_MODEL": f"local-dir:{tiny_model}", "PORT": str(port), "HOST": "127.0.0.1",
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "GRADIO_TEMP_DIR": str(tmp_path_factory.mktemp("gradio_uploads")), **settings}
    env.pop("EMOTION_MODELS", None)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"app.py exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if requests.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):  # not up yet, or still loading the default model
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"app.py did not answer /api/health within {START_TIMEOUT} s:\n"
                            f"{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url, proc
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def server(app_process) -> str:
    return app_process[0]


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 2 s: uvicorn would wait up to its 5 s grace for open event streams (the
    gradio_client heartbeat stream outlives `Client.close()`), and a test server has nothing to save."""
    proc.terminate()
    try:
        proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_rest_over_http(server, astronaut_file):
    assert requests.get(f"{server}/api/health", timeout=10).json()["status"] == "ok"
    with open(astronaut_file, "rb") as f:
        r = requests.post(f"{server}/api/predict", files={"file": f}, timeout=60)
    assert r.status_code == 200, r.text
    faces = r.json()["faces"]
    assert len(faces) == 1 and faces[0]["emotion"] in LABELS and len(faces[0]["probabilities"]) == 8

    r = requests.post(f"{server}/api/predict", files={"file": ("notes.txt", b"not a picture")}, timeout=30)
    assert r.status_code == 415 and "send a JPEG" in r.json()["error"]


def test_gradio_client_predict(server, astronaut_file):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    try:
        result = client.predict(handle_file(str(astronaut_file)), api_name="/predict")
        near = client.predict(handle_file(str(astronaut_file)), max_faces=1, range="short", api_name="/predict")
    finally:
        client.close()  # its heartbeat stream would otherwise hold the server's shutdown
    assert len(result["faces"]) == 1 and result["faces"][0]["emotion"] in LABELS
    assert result["image_size"] == {"width": 512, "height": 512}
    assert near["faces"][0]["box"] == result["faces"][0]["box"]  # options by name, as README shows


def test_browser_shows_the_emotion_of_the_one_face(server, astronaut_file, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"no browser at {CHROMIUM}: install Debian's chromium (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    face_line = "/Face 1: *(" + "|".join(LABELS) + ") +\\d+%/"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(server, wait_until="domcontentloaded")
            page.locator("#photo input[type=file]").set_input_files(str(astronaut_file))
            page.wait_for_function(f"() => {face_line}.test(document.querySelector('#summary').innerText)",
                                   timeout=30_000)
            page.locator(".face-chart").first.wait_for(timeout=10_000)
            page.locator("#annotated img").first.wait_for(timeout=10_000)
            summary = page.locator("#summary").inner_text()
            shot = tmp_path / "app.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert "1 face" in summary and "Face 2" not in summary
    if os.environ.get("EMOTION_SCREENSHOT_DIR"):
        target = Path(os.environ["EMOTION_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, target / "app.png")


# ---------------------------------------------------------------------------------------------------- hostile callers
def test_on_a_phone_the_model_name_is_not_cut_and_nothing_overflows(server):
    if not CHROMIUM.exists():
        pytest.skip(f"no browser at {CHROMIUM}: install Debian's chromium (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
            page.goto(server, wait_until="domcontentloaded")
            field = page.locator("#model input").first
            field.wait_for(timeout=30_000)
            shown = field.evaluate("e => ({value: e.value, scroll: e.scrollWidth, client: e.clientWidth})")
            page_width = page.evaluate("() => document.documentElement.scrollWidth")
        finally:
            browser.close()
    assert shown["value"].endswith("(default)"), shown
    assert shown["scroll"] <= shown["client"], f"the model name {shown['value']!r} is cut: {shown}"
    assert page_width <= 390


def peak_rss(proc: subprocess.Popen) -> int:
    """The server's peak resident memory so far (VmHWM), in bytes."""
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc: run this test on Linux")


def join_event(url: str, name: str, data: list, timeout: float = 5) -> None:
    """Queue a UI event as the browser does; the answer does not matter, only what it does to the server."""
    deps = requests.get(f"{url}/config", timeout=10).json()["dependencies"]
    index = next(i for i, d in enumerate(deps) if d.get("api_name") == name)
    session = f"t{time.monotonic_ns()}"
    r = requests.post(f"{url}/gradio_api/queue/join", timeout=timeout, json={
        "fn_index": index, "data": data, "session_hash": session, "event_data": None, "trigger_id": None})
    if r.status_code == 200:
        with requests.get(f"{url}/gradio_api/queue/data", params={"session_hash": session}, stream=True,
                          timeout=timeout) as stream:
            for line in stream.iter_lines():
                if b"process_completed" in line:
                    break


def test_forged_fifo_and_device_references_never_block_the_server(app_process, tmp_path, tiny_model):
    url, proc = app_process
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (str(fifo), "/dev/zero"):
        for name, data in (("to_editor", lambda ref: [ref]),
                           ("predict", lambda ref: [ref, tiny_model.name, 20, 0.5, "auto", False])):
            ref = {"path": path, "meta": {"_type": "gradio.FileData"}}
            try:
                join_event(url, name, data(ref), timeout=3)
            except requests.RequestException:
                pass  # a server that hangs on the event; what matters is whether it still answers below
            r = requests.get(f"{url}/api/health", timeout=3)
            assert r.status_code == 200, f"health after a forged {path} to {name}: {r.status_code}"
    assert proc.poll() is None


@pytest.mark.parametrize("event", ["live_frame", "predict_crop", "rest"])
def test_a_decompression_bomb_is_refused_by_every_component_in_bounded_memory(app_process, tiny_model, event):
    from conftest import flat_png

    url, proc = app_process
    bomb = flat_png(13_000, 13_000)  # 169 MP, ~0.7 GB as RGBA pixels, ~0.5 MB as a file
    before = peak_rss(proc)
    if event == "rest":
        r = requests.post(f"{url}/api/predict", files={"file": ("bomb.png", bomb)}, timeout=60)
        assert r.status_code == 413 and "megapixels" in r.json()["error"]
    else:
        path = requests.post(f"{url}/gradio_api/upload", files={"files": ("bomb.png", bomb)}, timeout=30).json()[0]
        ref = {"path": path, "orig_name": "bomb.png", "meta": {"_type": "gradio.FileData"}}
        data = ([ref, tiny_model.name, 20, 0.5, "auto"] if event == "live_frame"
                else [{"background": ref, "layers": [], "composite": None}, tiny_model.name])
        join_event(url, event, data, timeout=60)
    assert requests.get(f"{url}/api/health", timeout=5).status_code == 200
    grown = peak_rss(proc) - before
    assert grown < 150 * 2**20, f"the server's peak memory grew by {grown / 2**20:.0f} MB"


def test_nested_json_leaves_the_keep_alive_connection_usable(server):
    with requests.Session() as s:
        r = s.post(f"{server}/api/predict", data=b"[" * 100_000, headers={"content-type": "application/json"},
                   timeout=10)
        assert r.status_code == 400 and "nested too deeply" in r.json()["error"]
        assert s.get(f"{server}/api/health", timeout=10).status_code == 200


def raw_connection(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Reads until the server closes the connection; (closed in time, what it sent)."""
    sock.settimeout(seconds)
    got = b""
    try:
        while chunk := sock.recv(4096):
            got += chunk
    except (TimeoutError, socket.timeout):
        return False, got
    except ConnectionResetError:
        pass
    return True, got


@pytest.mark.parametrize("stall", ["mid-headers", "mid-body", "trickled-body"])
def test_slow_clients_time_out(server, stall):
    socks = [raw_connection(server) for _ in range(10)]
    for sock in socks:
        if stall == "mid-headers":
            sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
        else:
            sock.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                         b"Content-Length: 100000\r\n\r\n" + b"\x89PNG")
    if stall == "trickled-body":  # a byte every half second: never idle for long, but never done either
        for _ in range(8):
            time.sleep(0.5)
            for sock in socks:
                try:
                    sock.send(b"\0")
                except OSError:
                    pass
    for sock in socks:
        closed, got = closed_within(sock, 8)
        sock.close()
        assert closed, f"a client stalled {stall} is still connected"
        assert got == b"" or got.startswith(b"HTTP/1.1 408"), got[:200]
    assert requests.get(f"{server}/api/health", timeout=5).status_code == 200


def test_gradio_client_predict_with_the_shipped_example(server):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    try:
        result = client.predict(handle_file(str(ROOT / "examples" / "astronaut.jpg")), api_name="/predict")
    finally:
        client.close()
    assert len(result["faces"]) >= 1 and result["faces"][0]["emotion"] in LABELS


def test_docs_render_in_the_browser_with_the_network_off(server):
    if not CHROMIUM.exists():
        pytest.skip(f"no browser at {CHROMIUM}: install Debian's chromium (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    outside: list[str] = []

    def only_the_server(route):  # every request that leaves the server fails, as it would offline
        if route.request.url.startswith(server):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.route("**/*", only_the_server)
            page.goto(f"{server}/docs", wait_until="domcontentloaded")
            page.locator(".swagger-ui .opblock", has_text="/api/predict").first.wait_for(timeout=30_000)
        finally:
            browser.close()
    assert outside == []
