"""Load test for the REST API: N client threads POST the astronaut to /api/predict for a fixed time.

    python bench/load_app.py                              # starts `python app.py` itself on a free port
    python bench/load_app.py --contention 0,1             # without, then with a CPU-bound process beside it
    python bench/load_app.py --app-dir /path/to/other/checkout   # the same load against another version
    python bench/load_app.py --url http://127.0.0.1:7860 --clients 8 --seconds 30
    EMOTION_MODEL=local-dir:models/small_cnn python bench/load_app.py

Prints requests/s, p50/p95/p99 latency, the errors (503 = the server's queue was full; one without Retry-After is
counted apart), /api/health's latency probed every 0.25 s during the load and, for a server it started, its
resident memory before, at peak and after the load. Loopback addresses only: this is not a tool for
load-testing other people's servers.
"""
from __future__ import annotations

import argparse
import collections
import ipaddress
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import requests

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--url", help="a running server (loopback only); default: start app.py on a free port")
    p.add_argument("--clients", type=int, default=4, help="concurrent client threads")
    p.add_argument("--seconds", type=float, default=20.0, help="how long to send requests")
    p.add_argument("--image", type=Path, default=ROOT / "examples" / "astronaut.jpg", help="the photo to POST")
    p.add_argument("--model", help="a model id from GET /api/models (default: the server's default)")
    p.add_argument("--startup-timeout", type=float, default=300.0, help="seconds to wait for a started server")
    p.add_argument("--contention", default="0", metavar="N[,N...]",
                   help="run N CPU-bound processes (a busy loop each) beside the server during the load; a list "
                        "(0,1) runs the load once per value on the same server, back to back")
    p.add_argument("--app-dir", type=Path, default=ROOT, help="the checkout whose app.py to start (to compare)")
    args = p.parse_args(argv)
    try:
        args.contention = [int(n) for n in args.contention.split(",")]
    except ValueError:
        p.error(f"--contention takes whole numbers separated by commas, not {args.contention!r}")
    if args.clients < 1 or args.seconds <= 0 or min(args.contention) < 0:
        p.error("--clients must be >= 1, --seconds > 0 and --contention >= 0")
    if not (args.app_dir / "app.py").is_file():
        p.error(f"--app-dir {args.app_dir} has no app.py")
    if args.url:
        check_loopback(args.url, p)
    return args


def check_loopback(url: str, parser: argparse.ArgumentParser) -> None:
    host = urlparse(url).hostname or ""
    try:
        ok = all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
    except (socket.gaierror, ValueError):
        ok = False
    if not ok:
        parser.error(f"--url {url!r} is not a loopback address: use http://127.0.0.1:PORT or http://localhost:PORT")


def start_server(timeout: float, app_dir: Path = ROOT) -> tuple[str, subprocess.Popen]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}
    # The server logs to a file, not a pipe: an unread pipe fills up and then blocks the server.
    log = tempfile.NamedTemporaryFile(prefix="load_app_server_", suffix=".log", delete=False)
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=app_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    print(f"started app.py (log: {log.name})")
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"app.py exited with {proc.returncode}:\n{Path(log.name).read_text()[-2000:]}")
        try:
            r = requests.get(f"{url}/api/health", timeout=2)
            if r.status_code == 200:
                print(f"/api/health answered {timeout - (deadline - time.monotonic()):.1f} s after the start")
                return url, proc
            proc.terminate()
            sys.exit(f"the server is not ready: {r.json().get('error')}")
        except requests.ConnectionError:
            time.sleep(0.3)
    proc.kill()
    sys.exit(f"app.py did not answer /api/health within {timeout:g} s")


def client(url: str, image: bytes, params: dict, deadline: float, out: list, errors: collections.Counter, lock):
    session = requests.Session()
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        try:
            r = session.post(f"{url}/api/predict", params=params, timeout=60,
                             files={"file": ("astronaut.jpg", image, "image/jpeg")})
            ok, kind = r.status_code == 200, f"HTTP {r.status_code}"
            if r.status_code == 503 and "retry-after" not in r.headers:  # shedding must say when to come back
                kind = "HTTP 503 without Retry-After"
        except requests.RequestException as e:
            ok, kind = False, type(e).__name__
        elapsed = time.perf_counter() - t0
        with lock:
            if ok:
                out.append((elapsed, r.json()["timings_ms"].get("total", float("nan"))))
            else:
                errors[kind] += 1


def probe_health(url: str, deadline: float, out: list) -> None:
    """GET /api/health every 0.25 s during the load: its latency in ms, or None when it failed or was not 200."""
    session = requests.Session()
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        try:
            ok = session.get(f"{url}/api/health", timeout=10).status_code == 200
        except requests.RequestException:
            ok = False
        out.append((time.perf_counter() - t0) * 1000 if ok else None)
        time.sleep(0.25)


def memory_mb(pid: int | None) -> dict[str, float]:
    """The server's resident memory now (VmRSS) and at its peak so far (VmHWM), in MB; {} when unknown."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines() if pid else []
    except OSError:
        return {}
    return {k: int(v.split()[0]) / 1024 for k, _, v in (line.partition(":") for line in lines)
            if k in ("VmRSS", "VmHWM")}


def start_contention(n: int) -> list[subprocess.Popen]:
    """N processes that keep a core busy each, like another job on a shared machine."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def run(url: str, args: argparse.Namespace, pid: int | None = None) -> None:
    for n in args.contention:
        load(url, args, n, pid)


def load(url: str, args: argparse.Namespace, contention: int, pid: int | None) -> None:
    image = args.image.read_bytes()
    params = {"model": args.model} if args.model else {}
    warm = requests.post(f"{url}/api/predict", params=params, files={"file": ("a.jpg", image)}, timeout=300)
    if warm.status_code != 200:
        sys.exit(f"warm-up request failed ({warm.status_code}): {warm.json().get('error', warm.text[:300])}")
    print(f"{url}  model {warm.json()['model']['id']}  {len(warm.json()['faces'])} face(s) in {args.image.name}  "
          f"{args.clients} clients x {args.seconds:g} s  {contention} CPU-bound process(es) beside it")
    before = memory_mb(pid)
    results, errors, lock, health = [], collections.Counter(), threading.Lock(), []
    busy = start_contention(contention)
    try:
        deadline = time.monotonic() + args.seconds
        start = time.perf_counter()
        threads = [threading.Thread(target=client, args=(url, image, params, deadline, results, errors, lock))
                   for _ in range(args.clients)]
        threads.append(threading.Thread(target=probe_health, args=(url, deadline, health)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    report(results, errors, wall, health)
    if before:
        time.sleep(1.0)
        after = memory_mb(pid)
        print(f"memory     server RSS {before['VmRSS']:.0f} MB before, peak {after['VmHWM']:.0f} MB, "
              f"{after['VmRSS']:.0f} MB after")


def report(results: list, errors: collections.Counter, wall: float, health: list) -> None:
    n_err = sum(errors.values())
    print(f"requests   {len(results) + n_err} in {wall:.1f} s: {len(results) / wall:.1f} ok/s")
    if results:
        lat = np.array([r[0] for r in results]) * 1000
        server = np.array([r[1] for r in results])
        p50, p95, p99 = np.percentile(lat, [50, 95, 99])
        print(f"latency    p50 {p50:.1f} ms  p95 {p95:.1f} ms  p99 {p99:.1f} ms  max {lat.max():.1f} ms")
        print(f"server     mean {np.nanmean(server):.1f} ms in predict (decode + detect + classify)")
    print(f"errors     {n_err}" + (f"  ({', '.join(f'{k}: {v}' for k, v in errors.most_common())})" if n_err else ""))
    answered = [ms for ms in health if ms is not None]
    if health:
        print(f"health     {len(health)} probes, {len(health) - len(answered)} failed" + (
            f"; p50 {np.percentile(answered, 50):.1f} ms  max {max(answered):.1f} ms" if answered else ""))


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.url:
        run(args.url.rstrip("/"), args)
        return
    url, proc = start_server(args.startup_timeout, args.app_dir)
    try:
        run(url, args, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
