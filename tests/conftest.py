"""Shared fixtures: offline settings, a tiny exported model, the astronaut, and where the real data lives.

Torch is imported only by the tests that need it (the trainer's, the torch backend's, the export's): with the serving
set alone (requirements.txt, no torch) the app's tests run, on tiny models written with numpy (tests/tiny_export.py).
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a Hub id must fail at once, not retry for ~24 s
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

TORCH = importlib.util.find_spec("torch") is not None
NEEDS_TORCH = "needs torch, which the serving set leaves out: pip install -r requirements-dev.txt"
needs_torch = pytest.mark.skipif(not TORCH, reason=f"the trainer {NEEDS_TORCH}")

# The one setting for tests that need the real FER+ shards; they skip with a reason where it is absent.
DATA_DIR = Path(os.environ.get("EMOTION_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
FERPLUS = DATA_DIR / "ferplus"
POSED = DATA_DIR / "taiwanese_performers"
CKPLUS = DATA_DIR / "ckplus_dev"
CONTEMPT = DATA_DIR / "contempt_dev"


def write_export(folder: Path, architecture: str = "small_cnn", temperature: float = 1.0, seed: int = 0,
                 input_size=(1, 48, 48), onnx: bool = True, **facts) -> Path:
    """A randomly initialised model exported the way the trainer does it (config.json + model.safetensors, and
    model.onnx unless `onnx` is False), so that it serves in ONNX Runtime as a shipped model does. Without torch,
    a small_cnn of the same shape written with numpy (other weights: tests/tiny_export.py)."""
    from emotion.info import ModelInfo

    c = input_size[0]
    info = ModelInfo(architecture=architecture, input_size=input_size, mean=(0.5,) * c, std=(0.5,) * c,
                     temperature=temperature, **facts)
    if not TORCH:
        if architecture != "small_cnn":
            pytest.skip(f"a {architecture} export {NEEDS_TORCH}")
        from tiny_export import write_numpy_export

        return write_numpy_export(folder, info, seed)
    import torch
    from safetensors.torch import save_file

    from emotion.models import create_model
    from emotion.onnx_export import export_onnx

    torch.manual_seed(seed)
    model = create_model(architecture, num_classes=8, in_chans=c, **({"widths": (8, 16, 16, 32)}
                                                                      if architecture == "small_cnn" else {}))
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    config = info.to_config(pretrained_cfg=dict(model.pretrained_cfg), num_features=model.num_features)
    if architecture == "small_cnn":
        config["model_args"] = {"widths": [8, 16, 16, 32]}
    (folder / "config.json").write_text(json.dumps(config))
    if onnx:
        export_onnx(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny untrained small_cnn export (fast to load and run)."""
    return write_export(tmp_path_factory.mktemp("tiny_model"))


# skimage's 512x512 astronaut: her face, hand-labelled as (x, y, w, h)
ASTRONAUT_FACE = (178, 80, 94, 100)


@pytest.fixture(scope="session")
def detector():
    from emotion.faces import FaceDetector

    det = FaceDetector()
    yield det
    det.close()


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def shared_data(folder: Path, shards: str, what: str) -> Path:
    """A data set of ../shared/data (EMOTION_TEST_DATA), or a skip that says where it was looked for."""
    if not any(folder.glob(shards)):
        pytest.skip(f"{what} not found at {folder} (set EMOTION_TEST_DATA to the folder holding {folder.name}/)")
    return folder


@pytest.fixture(scope="session")
def ferplus_dir() -> Path:
    return shared_data(FERPLUS, "validation-*.parquet", "FER+ data")


@pytest.fixture(scope="session")
def posed_dir() -> Path:
    return shared_data(POSED, "validation-*.parquet", "posed performers' data")


@pytest.fixture(scope="session")
def ckplus_dir() -> Path:
    return shared_data(CKPLUS, "train-*.parquet", "CK+ development half")


@pytest.fixture(scope="session")
def contempt_dir() -> Path:
    return shared_data(CONTEMPT, "train-*.parquet", "wild contempt crops")


def flat_png(width: int, height: int, color_type: int = 6) -> bytes:
    """A valid PNG of one flat colour, written row by row: tiny on disk, huge once decoded (a decompression bomb).

    color_type 0 is gray, 2 RGB, 6 RGBA; built with zlib directly so the test never holds the decoded pixels.
    """
    import struct
    import zlib

    channels = {0: 1, 2: 3, 6: 4}[color_type]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row, z = b"\0" + b"\x80" * (width * channels), zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def set_settings(monkeypatch: pytest.MonkeyPatch, **changes) -> None:
    """The server's settings (webapp/settings.py) with `changes`, for this test only."""
    import dataclasses

    import webapp.settings

    monkeypatch.setattr(webapp.settings, "_current", dataclasses.replace(webapp.settings.current(), **changes))


@pytest.fixture(scope="module")
def client(tiny_model):
    """The whole app in-process (REST + Gradio), serving the tiny model as its default; one per test module."""
    from fastapi.testclient import TestClient

    import app as app_module

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMOTION_MODEL", f"local-dir:{tiny_model}")
        mp.delenv("EMOTION_MODELS", raising=False)
        app = app_module.create_app()
    with TestClient(app) as c:  # the context runs the lifespan, which starts Gradio's queue
        yield c
