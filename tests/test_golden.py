"""Every way out of the app writes the same faces as before: REST, CLI --json and text, predict-dataset parquet,
the video's JSON, CSV and parquet, and the webcam's smoothed faces, on fixed images and a generated clip.

The golden files under tests/golden/ were written by the code before faces became one `FacePrediction` written by
`emotion.records`; this test holds every later version to them. Timings are dropped, temporary paths replaced by
placeholders, floats rounded to 5 decimals and compared within 2e-5 (a float that sits on a rounding edge may
round the other way on another CPU); everything else (keys, order, strings, ints, booleans, nulls) must be equal.

To rewrite them after an intended change of output: EMOTION_UPDATE_GOLDEN=1 pytest tests/test_golden.py, then
read the diff.
"""
from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from skimage import data

from conftest import ASTRONAUT_FACE, NEEDS_TORCH, TORCH, write_export

GOLDEN = Path(__file__).parent / "golden"
EXAMPLE = Path(__file__).parents[1] / "examples" / "astronaut.jpg"
UPDATE = os.environ.get("EMOTION_UPDATE_GOLDEN") == "1"
FLOAT_TOLERANCE = 2e-5


# ------------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A tiny untrained model of its own (seed 3), so no other test's fixture decides the numbers."""
    if not TORCH:
        pytest.skip(f"the golden numbers come from a tiny model initialised by torch: this {NEEDS_TORCH}")
    return write_export(tmp_path_factory.mktemp("golden_model"), seed=3)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """The example astronaut, a generated class photo (12 faces), a gray image and a broken JPEG."""
    root = tmp_path_factory.mktemp("golden_photos")
    (root / "astronaut.jpg").write_bytes(EXAMPLE.read_bytes())
    x, y, w, h = ASTRONAUT_FACE
    head = Image.fromarray(data.astronaut()).crop((x - 38, y - 50, x + w + 38, y + h + 26))
    canvas = Image.new("RGB", (800, 600), (128, 128, 128))
    side = round(80 * head.width / w)
    for i in range(4):
        for j in range(3):
            canvas.paste(head.resize((side, side)), (i * 200, j * 200))
    canvas.save(root / "group.png")
    Image.new("RGB", (64, 64), "gray").save(root / "blank.jpg")
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """tests/test_video.py's clip: 3 s at 10 fps; face A walks right for 2 s, face B enters at 1 s and stays."""
    from test_video import write_clip

    x, y, w, h = ASTRONAUT_FACE
    head = Image.fromarray(data.astronaut()).crop((x - 30, y - 40, x + w + 30, y + h + 20))
    frames = []
    for i in range(30):
        canvas = Image.new("RGB", (480, 320), (110, 120, 130))
        if i < 20:
            canvas.paste(head, (10 + 4 * i, 20))
        if i >= 10:
            canvas.paste(head, (300, 150))
        frames.append(canvas)
    return write_clip(tmp_path_factory.mktemp("golden_video") / "clip.mp4", frames)


@pytest.fixture(scope="module")
def client(model):
    from fastapi.testclient import TestClient

    import app as app_module

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMOTION_MODEL", f"local-dir:{model}")
        mp.delenv("EMOTION_MODELS", raising=False)
        app = app_module.create_app()
    with TestClient(app) as c:
        yield c


# ------------------------------------------------------------------------------------------------------- compare
def normalise(value, places: dict[str, str]):
    """JSON-like data without timings, with placeholders for temporary paths and floats rounded to 5 decimals."""
    if isinstance(value, dict):
        return {k: normalise(v, places) for k, v in value.items() if k != "timings_ms"}
    if isinstance(value, (list, tuple)):
        return [normalise(v, places) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if np.isnan(value) else round(float(value), 5)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, str):
        for path, name in places.items():
            value = value.replace(path, name)
    return value


def assert_same(actual, expected, where: str = "") -> None:
    """Equal, floats within FLOAT_TOLERANCE; the first difference is named by its place."""
    if isinstance(expected, float) and isinstance(actual, (int, float)) and not isinstance(actual, bool):
        assert actual == pytest.approx(expected, abs=FLOAT_TOLERANCE), f"{where}: {actual} != {expected}"
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and list(actual) == list(expected), \
            f"{where}: keys {list(actual) if isinstance(actual, dict) else actual} != {list(expected)}"
        for k in expected:
            assert_same(actual[k], expected[k], f"{where}.{k}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{where}: {actual} != {expected}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same(a, e, f"{where}[{i}]")
    else:
        assert type(actual) is type(expected) and actual == expected, f"{where}: {actual!r} != {expected!r}"


def check(name: str, value, places: dict[str, str]) -> None:
    value = json.loads(json.dumps(normalise(value, places)))
    path = GOLDEN / f"{name}.json"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(json.dumps(value, indent=1) + "\n")
        return
    assert path.is_file(), f"{path} is missing: run with EMOTION_UPDATE_GOLDEN=1 once, from a commit you trust"
    assert_same(value, json.loads(path.read_text()), name)


def places(model: Path, *folders: Path) -> dict[str, str]:
    out = {str(f): f"<{f.name.rstrip('0123456789')}>" for f in folders}
    return {**out, str(model): "<model>", model.name: "<model>"}


def table(path: Path) -> dict:
    """A parquet file or folder: its columns with their types, and its rows."""
    t = pq.read_table(path)
    return {"schema": [f"{f.name}: {f.type}" for f in t.schema], "rows": t.to_pylist()}


def data_url(pixels: np.ndarray) -> dict:
    """What the browser sends for a webcam frame."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return {"url": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()}


# ------------------------------------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("query", ["", "?x=178&y=80&w=94&h=100", "?max_faces=3"])
@pytest.mark.parametrize("name", ["astronaut.jpg", "group.png", "blank.jpg"])
def test_rest_predict_answers_as_before(client, model, photos, name, query):
    r = client.post(f"/api/predict{query}", files={"file": (name, (photos / name).read_bytes(), "image/png")})
    check(f"rest_{name.split('.')[0]}_{query.split('=')[0].strip('?') or 'plain'}",
          {"status": r.status_code, "body": r.json()}, places(model, photos))


def test_cli_json_and_text_answer_as_before(model, photos, capsys):
    from emotion.__main__ import main

    files = [str(photos / n) for n in ("astronaut.jpg", "group.png", "blank.jpg")]
    assert main(["predict", *files, "--model", f"local-dir:{model}", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert main(["predict", *files, "--model", f"local-dir:{model}", "--max-faces", "5"]) == 0
    check("cli_predict", {"json": lines, "text": capsys.readouterr().out.splitlines()}, places(model, photos))


def test_predict_dataset_writes_the_rows_as_before(model, photos, tmp_path):
    from emotion.__main__ import main

    out = tmp_path / "out"
    assert main(["predict-dataset", str(photos), "--output", str(out), "--model", f"local-dir:{model}",
                 "--no-progress"]) == 0
    check("predict_dataset", table(out), places(model, photos, tmp_path))


def test_video_cli_json_csv_and_parquet_as_before(model, clip, tmp_path, capsys):
    import pandas as pd

    from emotion.__main__ import main

    common = ["predict", str(clip), "--model", f"local-dir:{model}", "--fps", "5"]
    assert main(common + ["--json"]) == 0
    as_json = json.loads(capsys.readouterr().out)
    assert main(common + ["--csv", str(tmp_path / "t.csv")]) == 0
    text = capsys.readouterr().out.splitlines()
    assert main(common + ["--parquet", str(tmp_path / "t.parquet")]) == 0
    csv = pd.read_csv(tmp_path / "t.csv")
    check("video_cli", {"json": as_json, "text": text, "csv_columns": list(csv.columns),
                        "csv": csv.to_dict("records"), "parquet": table(tmp_path / "t.parquet")},
          places(model, clip.parent))


def test_rest_predict_video_answers_as_before(client, model, clip):
    r = client.post("/api/predict_video?fps=5", files={"file": ("clip.mp4", clip.read_bytes(), "video/mp4")})
    assert r.status_code == 200, r.text
    check("rest_video", r.json(), places(model, clip.parent))


def test_webcam_faces_are_smoothed_as_before(model, photos, monkeypatch):
    """The faces each webcam frame shows (smoothed along their tracks), over frames that come and go."""
    import webapp.ui
    from webapp.models import ModelRegistry
    from webapp.pool import InferencePool

    shown = []
    summary = webapp.ui.render.summary
    monkeypatch.setattr(webapp.ui.render, "summary", lambda result, *a: shown.append(result) or summary(result, *a))
    clock = iter([0.0, 0.2, 0.4, 0.6, 0.8, 2.0, 2.2, 2.4])  # the handler's clock only (time.monotonic is shared)
    monkeypatch.setattr(webapp.ui, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    handlers = webapp.ui.Handlers(ModelRegistry({"tiny": f"local-dir:{model}"}, "tiny"), InferencePool(1, 4))
    astronaut = np.asarray(Image.open(photos / "astronaut.jpg").convert("RGB"))
    group = np.asarray(Image.open(photos / "group.png").convert("RGB"))
    shifted = np.roll(astronaut, 12, axis=1)
    tracker = None
    for pixels in (astronaut, shifted, astronaut, group, group, astronaut, np.full_like(astronaut, 128), group):
        _, _, tracker = handlers.live_frame(data_url(pixels), "tiny", 20, 0.5, "auto", tracker)
    check("webcam", shown, places(model, photos))
