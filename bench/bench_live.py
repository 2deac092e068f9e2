"""The /live page in headless Chromium with a fake 640x480 camera looping the astronaut, her face 15%, 11% and 8% of
the frame's width (a face 15% wide is someone ~0.8 m from a laptop's camera, 8% ~1.5 m): whether the page finds her
and reads her as happy, frames analysed per second, the CPU time Chromium spends per frame (which other jobs on the
machine hardly change: 15 frames/s on two cores needs at most ~130 ms), per-frame times, and what loading costs (MB
over the network, seconds from navigation to the first result).

    python bench/bench_live.py [--seconds 10] [--faces 0.15 0.11 0.08] [--models small_cnn resnet50]

Starts `python app.py` on a free port. Each run is a fresh browser (nothing cached); the app's gzip copies are made
first, as on a server that has run for a while. Needs /usr/bin/chromium.
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
from playwright.sync_api import TimeoutError as PlaywrightTimeout, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_live import FACE_WIDTHS, camera_frame, write_y4m  # noqa: E402
from test_server import CHROMIUM, CHROMIUM_ARGS, free_port  # noqa: E402

from emotion import shipped_models  # noqa: E402
from emotion.bench import cpu_name  # noqa: E402

DEFAULT_MODEL = (ROOT / "models" / "DEFAULT").read_text().strip()
FIND_S = 60  # a face not shown this long after navigation is not found


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
    files = [f"/live/files/live/{p.name}" for p in (ROOT / "webapp/static/live").glob("*.[jc]s*")]
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


def measure(p, url: str, query: str, video: Path, seconds: float) -> dict:
    """The page's #live-stats, read every second for `seconds` once it has run 2 s past its first result (or past
    FIND_S without one: then it found no face)."""
    browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS,
                                "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={video}"])
    try:
        page = browser.new_context(permissions=["camera"]).new_page()
        page.goto(f"{url}/live?{query}")
        try:
            page.wait_for_function("JSON.parse(document.querySelector('#live-stats').textContent).faces.length > 0",
                                   timeout=FIND_S * 1000)
        except PlaywrightTimeout:
            pass
        time.sleep(2)
        samples, cpu = [], chromium_cpu_s()
        for _ in range(int(seconds)):
            time.sleep(1)
            samples.append(json.loads(page.text_content("#live-stats")))
        cpu = chromium_cpu_s() - cpu
    finally:
        browser.close()
    frames = sum(s["fps"] for s in samples)
    return {**summary(samples), "cpu_ms": 1000 * cpu / frames if frames else None}


def chromium_cpu_s() -> float:
    """CPU seconds (user + system) used so far by the Chromium processes this bench started: unlike frames per
    second, the CPU time a frame takes hardly moves with the other jobs on the machine."""
    parents, cpu = {}, {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else None
        except OSError:  # a process that ended meanwhile
            continue
        if stat:
            name, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
            parents[int(entry.name)] = int(fields[1])
            if name.startswith("chrom"):
                cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return sum(seconds for pid, seconds in cpu.items() if descends(pid, os.getpid(), parents))


def descends(pid: int, ancestor: int, parents: dict[int, int]) -> bool:
    while pid > 1:
        pid = parents.get(pid, 0)
        if pid == ancestor:
            return True
    return False


def summary(samples: list[dict]) -> dict:
    """fps averaged over the samples; the rest from the last one: the face read (largest, if several), its box's
    width, the per-frame times, the loading costs; how many samples showed exactly one face."""
    last = samples[-1]
    face = max(last["faces"], key=lambda f: f["box"]["w"], default=None)
    return {"fps": sum(s["fps"] for s in samples) / len(samples), "first_result_s": last["first_result_s"],
            "downloaded_mb": last["downloaded_mb"], "timings_ms": last.get("timings_ms") or {},
            "found": sum(len(s["faces"]) == 1 for s in samples), "samples": len(samples),
            "emotion": face and f"{face['emotion']}{'?' if face['uncertain'] else ''} {face['confidence']:.2f}",
            "box_w": face and face["box"]["w"]}


def row(face: float, model: str, r: dict) -> str:
    t = {k: f"{r['timings_ms'].get(k, 0):.0f}" for k in ("detect", "crop", "classify")}
    box = f"{r['box_w']:.0f}" if r["box_w"] else "-"
    cpu = f"{r['cpu_ms']:.0f}" if r["cpu_ms"] else "-"
    return (f"| {face:.0%} | {model} | {r['found']}/{r['samples']} | {r['emotion'] or 'no face'} | {box} | "
            f"{r['fps']:.1f} | {cpu} | {t['detect']} / {t['crop']} / {t['classify']} | "
            f"{r['first_result_s'] or 0:.1f} | {r['downloaded_mb']:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10, help="fps averaged over this many 1-second readings")
    ap.add_argument("--faces", nargs="+", type=float, default=FACE_WIDTHS,
                    help="the astronaut's face width as a fraction of the frame's")
    ap.add_argument("--models", nargs="+", default=[DEFAULT_MODEL], help=f"of {sorted(shipped_models())}")
    args = ap.parse_args()
    if not CHROMIUM.is_file():
        raise SystemExit(f"no browser at {CHROMIUM}: apt-get install -y chromium")
    proc, url = start_app()
    try:
        warm_gzip(url)
        with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
            version = subprocess.run([str(CHROMIUM), "--version"], capture_output=True, text=True).stdout.strip()
            print(f"{cpu_name()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {version} headless; "
                  "640x480 fake camera, one face\n")
            print("| face width | model | seconds with one face | read as | box width (px) | fps | "
                  "Chromium CPU per frame (ms) | per frame: detect / crop / classify (ms) | first result (s) | "
                  "downloaded (MB) |")
            print("|---|---|---|---|---|---|---|---|---|---|")
            for face in args.faces:
                video = write_y4m(camera_frame(face), Path(tmp) / f"astronaut_{face}.y4m")
                for model in args.models:
                    r = measure(p, url, f"model={model}", video, args.seconds)
                    print(row(face, model, r), flush=True)
            print(f"\nload average after: {os.getloadavg()[0]:.1f}")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
