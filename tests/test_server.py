"""The app for real: `python app.py` in a subprocess, called over HTTP, through gradio_client and in Chromium."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from PIL import Image

from emotion import LABELS

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
START_TIMEOUT = 120  # seconds: importing torch, mediapipe and gradio and loading the model on a busy 2-core machine


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
def server(tiny_model, tmp_path_factory):
    """The URL of `python app.py` serving the tiny model on a free loopback port; its log is shown on failure."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    env = {**os.environ, "EMOTION_MODEL": f"local-dir:{tiny_model}", "PORT": str(port), "HOST": "127.0.0.1",
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
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
        yield url
    finally:
        stop(proc)


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
    finally:
        client.close()  # its heartbeat stream would otherwise hold the server's shutdown
    assert len(result["faces"]) == 1 and result["faces"][0]["emotion"] in LABELS
    assert result["image_size"] == {"width": 512, "height": 512}


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
