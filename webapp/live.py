"""/live: the webcam read on the visitor's own device. The page (webapp/static/live/) runs MediaPipe's face detector
and the model's ONNX export in the browser (WebAssembly); after it has loaded, no frame, crop or result is sent.

Everything the page loads comes from this app, from local files (no CDN): the page's own scripts, the vendored npm
files (webapp/static/vendor/README.md), the committed BlazeFace model and each model's model.onnx. Only files on a
fixed list are served, and a model only by its id, never by a path. JavaScript and WebAssembly go out
gzip-compressed to browsers that accept it (the two .wasm files: 27 -> 7.5 MB). Each file is compressed once per
process, in the background (~2.5 s a .wasm file here): until that is done it goes out as it is, so no request waits.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import threading
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from emotion.faces import ASSETS, MODEL_FILES
from emotion.info import CONFIG_NAME, ModelInfo
from emotion.onnx_export import INPUT_NAME, ONNX_NAME, OUTPUT_NAME
from emotion.sources import LOCAL

from .models import ModelRegistry
from .render import COLOURS

STATIC = Path(__file__).resolve().parent / "static"
PAGE = STATIC / "live" / "index.html"
DETECTOR = ASSETS / MODEL_FILES["short"]  # webcams show near faces: the short-range model, as "Near" on the server
MEDIA_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm",
               ".css": "text/css", ".tflite": "application/octet-stream", ".onnx": "application/octet-stream"}
COMPRESSED = (".js", ".mjs", ".wasm", ".css")  # ONNX and TFLite weights barely shrink (measured: 4-8%)
_gzipped: dict[Path, bytes | None] = {}  # None: being compressed
_gzip_lock = threading.Lock()


def static_files() -> dict[str, Path]:
    """URL path under /live/files/ -> file: the page's scripts, the vendored files named in SHA256SUMS, the detector."""
    files = {f"live/{p.name}": p for p in (STATIC / "live").iterdir() if p.suffix in (".js", ".css")}
    vendor = STATIC / "vendor"
    for line in (vendor / "SHA256SUMS").read_text().splitlines():
        name = line.split()[-1]
        files[f"vendor/{name}"] = vendor / name
    files[DETECTOR.name] = DETECTOR
    return files


def browser_models(registry: ModelRegistry) -> dict[str, Path]:
    """The models the page can run: each configured local model whose folder holds a model.onnx, id -> folder."""
    out = {}
    for key, source in registry.sources.items():
        folder = Path(source[len(LOCAL):]) if source.startswith(LOCAL) else None
        if folder is not None and (folder / ONNX_NAME).is_file() and (folder / CONFIG_NAME).is_file():
            out[key] = folder
    return out


def model_facts(key: str, folder: Path, root: str) -> dict:
    """What the page needs to preprocess, run and read a model as the server does (from its config.json)."""
    info = ModelInfo.from_config(json.loads((folder / CONFIG_NAME).read_text()))
    url = f"{root}/live/models/{quote(key, safe='/:')}/{ONNX_NAME}"
    return {"id": key, "url": url, "bytes": (folder / ONNX_NAME).stat().st_size,
            "input": INPUT_NAME, "output": OUTPUT_NAME, "labels": list(info.labels),
            "input_size": list(info.input_size),
            "mean": list(info.mean), "std": list(info.std), "interpolation": info.interpolation,
            "native_size": info.native_size, "crop_margin": info.crop_margin, "crop_offset_y": info.crop_offset_y,
            "align_eyes": info.align_eyes, "temperature": info.temperature, "tta_flip": info.tta_flip,
            "logit_bias": dict(info.logit_bias), "uncertain_threshold": info.uncertain_threshold}


def install_live(app: FastAPI, registry: ModelRegistry) -> None:
    """Serve /live and what it loads; call before the Gradio mount at "/" (which would answer these paths)."""
    app.include_router(build_live_router(registry))


def build_live_router(registry: ModelRegistry) -> APIRouter:
    router = APIRouter(prefix="/live", include_in_schema=False)
    files = static_files()

    @router.get("")
    def page(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")  # behind a proxy prefix, as /docs does
        html = PAGE.read_text().replace("{{ROOT}}", root)
        return HTMLResponse(html, headers={"Cache-Control": "no-cache"})

    @router.get("/config.json")
    def config(request: Request) -> JSONResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        models = browser_models(registry)
        default = registry.default if registry.default in models else next(iter(models), None)
        return JSONResponse({"models": [model_facts(k, f, root) for k, f in models.items()], "default": default,
                             "detector": f"{root}/live/files/{DETECTOR.name}", "colours": COLOURS},
                            headers={"Cache-Control": "no-cache"})

    @router.get("/models/{path:path}")  # {id}/model.onnx; an id may hold a "/" (a source named twice)
    def model(path: str, request: Request) -> Response:
        key = path.removesuffix(f"/{ONNX_NAME}")
        folder = browser_models(registry).get(key) if key != path else None
        if folder is None:
            return _not_found(f"no model {path!r} runs in the browser: GET /live/config.json lists those that do")
        return send_file(request, folder / ONNX_NAME)

    @router.get("/files/{name:path}")
    def file(name: str, request: Request) -> Response:
        path = files.get(name)
        if path is None:
            return _not_found(f"no file {name!r} here: the live page loads only its own files")
        return send_file(request, path)

    return router


def send_file(request: Request, path: Path) -> Response:
    """The file with an ETag (a reload revalidates it: 304, no body), gzip-compressed where that pays, the browser
    accepts it and the compressed copy is ready."""
    stat = path.stat()
    etag = '"' + hashlib.sha256(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    media_type = MEDIA_TYPES.get(path.suffix, "application/octet-stream")
    if path.suffix in COMPRESSED and "gzip" in request.headers.get("accept-encoding", ""):
        packed = compressed(path)
        if packed is not None:
            return Response(packed, media_type=media_type, headers={**headers, "Content-Encoding": "gzip"})
    return FileResponse(path, media_type=media_type, headers=headers, stat_result=stat)


def compressed(path: Path) -> bytes | None:
    """The file gzip-compressed, or None while that is being done (it is started on the first call)."""
    with _gzip_lock:
        if path in _gzipped:
            return _gzipped[path]
        _gzipped[path] = None
    threading.Thread(target=_compress, args=(path,), daemon=True, name=f"gzip {path.name}").start()
    return None


def _compress(path: Path) -> None:
    data = gzip.compress(path.read_bytes(), compresslevel=6, mtime=0)
    with _gzip_lock:
        _gzipped[path] = data


def _not_found(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=404)
