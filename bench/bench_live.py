"""The /live page in headless Chromium with a fake camera looping the astronaut: frames analysed per second for each
model, and what loading costs (MB over the network, seconds from navigation to the first result).

    python bench/bench_live.py [--seconds 10] [--models small_cnn resnet50]

Starts `python app.py` on a free port. Each model is measured in a fresh browser (nothing cached); the app's
gzip copies are made first, as on a server that has run for a while. Needs /usr/bin/chromium.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_live import camera_frame, write_y4m  # noqa: E402
from test_server import CHROMIUM, CHROMIUM_ARGS, free_port  # noqa: E402

from emotion import shipped_models  # noqa: E402
from emotion.bench import cpu_name  # noqa: E402


def start_app() -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if requests.get(f"{url}/api/health", timeout=2).ok:
                return proc, url
        except requests.RequestException:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("app.py did not start")


def warm_gzip(url: str) -> None:
    """Asks for every file once, compressed, until the app sends it compressed (it compresses in the background)."""
    config = requests.get(f"{url}/live/config.json").json()
    page = requests.get(f"{url}/live").text
    files = [f"/live/files/live/{n}" for n in ("live.js", "pixels.js", "tracker.js", "live.css")]
    files += [f"/live/files/vendor/{line.split()[1]}"
              for line in (ROOT / "webapp/static/vendor/SHA256SUMS").read_text().splitlines()]
    assert page and config
    for path in files:
        for _ in range(200):
            got = requests.get(url + path, headers={"Accept-Encoding": "gzip"}, stream=True)
            got.close()
            if got.headers.get("content-encoding") == "gzip":
                break
            time.sleep(0.1)


def measure(p, url: str, model: str, video: Path, seconds: float) -> dict:
    browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS,
                                "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={video}"])
    try:
        page = browser.new_context(permissions=["camera"]).new_page()
        page.goto(f"{url}/live?model={model}")
        page.wait_for_function("JSON.parse(document.querySelector('#live-stats').textContent).faces.length > 0",
                               timeout=120_000)
        time.sleep(2)
        samples = []
        for _ in range(int(seconds)):
            time.sleep(1)
            samples.append(json.loads(page.text_content("#live-stats")))
    finally:
        browser.close()
    last = samples[-1]
    return {"model": model, "fps": sum(s["fps"] for s in samples) / len(samples),
            "first_result_s": last["first_result_s"], "downloaded_mb": last["downloaded_mb"],
            "timings_ms": last["timings_ms"], "emotion": last["faces"][0]["emotion"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10, help="fps averaged over this many 1-second readings")
    ap.add_argument("--models", nargs="+", default=sorted(shipped_models()))
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.is_file():
        raise SystemExit(f"no browser at {CHROMIUM}: apt-get install -y chromium")
    proc, url = start_app()
    try:
        warm_gzip(url)
        with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
            video = write_y4m(camera_frame(), Path(tmp) / "astronaut.y4m")
            version = subprocess.run([str(CHROMIUM), "--version"], capture_output=True, text=True).stdout.strip()
            print(f"{cpu_name()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {version} headless; "
                  "640x480 fake camera, one face\n")
            print("| model | fps | first result (s) | downloaded (MB) | per frame: detect / crop / classify (ms) |")
            print("|---|---|---|---|---|")
            for model in args.models:
                r = measure(p, url, model, video, args.seconds)
                t = r["timings_ms"]
                print(f"| {model} | {r['fps']:.1f} | {r['first_result_s']:.1f} | {r['downloaded_mb']:.1f} | "
                      f"{t['detect']:.0f} / {t['crop']:.0f} / {t['classify']:.0f} |", flush=True)
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
