"""/live: the webcam read on the visitor's own device. The page (webapp/static/live/) searches each frame for faces
as the server does (YuNet, then BlazeFace on each face's view) and runs the model's ONNX export, all in
onnxruntime-web in the browser (WebAssembly); after it has loaded, no frame, crop or result is sent.

Everything the page loads comes from this app, from local files (no CDN): the page's own scripts, the vendored npm
files (webapp/static/vendor/README.md), the server's own YuNet and BlazeFace ONNX files and each model's model.onnx.
Only files on a fixed list are served, and a model only by its id, never by a path. JavaScript and WebAssembly go
out gzip-compressed to browsers that accept it (the .wasm file: 14.2 -> 3.7 MB). Each file is compressed once per
process, in the background (~0.8 s the .wasm file here): until that is done it goes out as it is, so no request
waits.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import json
import threading
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from emotion import faces
from emotion.blazeface import ONNX_PATH as BLAZEFACE
from emotion.info import CONFIG_NAME, ModelInfo
from emotion.onnx_export import INPUT_NAME, ONNX_NAME, OUTPUT_NAME
from emotion.sources import LOCAL
from emotion.video import FULL_SEARCH_SECONDS
from emotion.yunet import MODEL_PATH as YUNET, free_input, read_model

from .models import ModelRegistry
from .render import COLOURS

STATIC = Path(__file__).resolve().parent / "static"
PAGE = STATIC / "live" / "index.html"
MEDIA_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm",
               ".css": "text/css", ".onnx": "application/octet-stream"}
COMPRESSED = (".js", ".mjs", ".wasm", ".css")  # ONNX weights barely shrink (measured: 4-8%)
_gzipped: dict[Path, bytes | None] = {}  # None: being compressed
_gzip_lock = threading.Lock()


def static_files() -> dict[str, Path]:
    """URL path under /live/files/ -> file: the page's scripts, the vendored files named in SHA256SUMS, BlazeFace
    (YuNet has a route of its own: `detector_model`)."""
    files = {f"live/{p.name}": p for p in (STATIC / "live").iterdir() if p.suffix in (".js", ".css")}
    vendor = STATIC / "vendor"
    for line in (vendor / "SHA256SUMS").read_text().splitlines():
        name = line.split()[-1]
        files[f"vendor/{name}"] = vendor / name
    files[BLAZEFACE.name] = BLAZEFACE
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
            "flip_margin": info.flip_margin, "logit_bias": dict(info.logit_bias), "uncertain_threshold": info.uncertain_threshold}


def detector_facts(root: str) -> dict:
    """What the page needs to search a frame for faces as the server does (emotion/faces.py; once a second, the
    frames between followed as emotion/video.py reads a video's), read from there so that the two cannot drift
    apart; the server's defaults for the score, the number of faces and the smallest face looked for."""
    return {"yunet": f"{root}/live/files/{YUNET.name}", "blazeface": f"{root}/live/files/{BLAZEFACE.name}",
            "near_side": faces.NEAR_SIDE, "min_side": faces.MIN_SIDE, "side_slack": faces.SIDE_SLACK,
            "candidate_score": faces.CANDIDATE_SCORE, "merge_iou": faces.MERGE_IOU,
            "max_candidates": faces.MAX_CANDIDATES, "view_side": faces.VIEW_SIDE, "view_fill": faces.VIEW_FILL,
            "view_floor": faces.VIEW_FLOOR, "view_match_iou": faces.VIEW_MATCH_IOU,
            "operating_point": faces.OPERATING_POINT, "yunet_operating_point": faces.YUNET_OPERATING_POINT,
            "square_side": faces.SQUARE_SIDE, "square_down": faces.SQUARE_DOWN,
            "portrait_faces": faces.PORTRAIT_FACES, "portrait_fraction": faces.PORTRAIT_FRACTION,
            "detect_side": faces.DETECT_SIDE, "max_detect_side": faces.MAX_DETECT_SIDE,
            "min_input_face": faces.MIN_INPUT_FACE, "min_face": faces.MIN_FACE,
            "full_search_seconds": FULL_SEARCH_SECONDS, "min_score": faces.DEFAULT_MIN_SCORE,
            "max_faces": faces.DEFAULT_MAX_FACES}


@functools.cache
def detector_model() -> bytes:
    """The shipped YuNet (its digest checked) with its input's declared 640x640 made free, as the server runs it:
    onnxruntime-web, like ONNX Runtime, refuses another size than a model declares."""
    return free_input(read_model(YUNET))  # the server's own way to free it (emotion/yunet.py)


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
                             "detector": detector_facts(root), "colours": COLOURS},
                            headers={"Cache-Control": "no-cache"})

    @router.get(f"/files/{YUNET.name}")
    def yunet(request: Request) -> Response:
        return send_bytes(request, detector_model(), MEDIA_TYPES[".onnx"])

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


def send_bytes(request: Request, data: bytes, media_type: str) -> Response:
    """`data` with an ETag of its content (a reload revalidates it: 304, no body)."""
    etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=media_type, headers=headers)


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
