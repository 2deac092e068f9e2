"""Action units through every way in: the Python API, the CLI (photos, folders, predict-dataset, videos), REST
(photos and videos), the tracker's smoothing and the UI's endpoint; and nothing of them without the option."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image
from skimage import data

from emotion import Predictor
from emotion.action_units import AU_TABLE, BLENDSHAPES, FaceActionUnits
from emotion.records import FacePrediction
from emotion.tracking import FaceTracker

from conftest import ASTRONAUT_FACE

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
AU_FIELDS = {"action_units", "blendshapes", "action_units_reason"}
AU_COLUMNS = [f"au_{au[2:]}" for au in AU_TABLE]


@pytest.fixture(scope="module")
def predictor(tiny_model) -> Predictor:
    return Predictor.from_pretrained(f"local-dir:{tiny_model}")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """1 s at 10 fps, 320x240: the astronaut's head, still."""
    from test_video import write_clip

    x, y, w, h = ASTRONAUT_FACE
    head = Image.fromarray(data.astronaut()).crop((x - 30, y - 40, x + w + 30, y + h + 20))
    canvas = Image.new("RGB", (320, 240), (110, 120, 130))
    canvas.paste(head, (60, 30))
    return write_clip(tmp_path_factory.mktemp("au_video") / "clip.mp4", [canvas] * 10)


def assert_smiling_astronaut(face: dict) -> None:
    """The reporter's acceptance: AU12 >= 0.5, AU4 <= 0.3, the 52 blendshapes."""
    assert face["action_units_reason"] is None
    assert set(face["action_units"]) == set(AU_TABLE)
    assert face["action_units"]["AU12"] >= 0.5 and face["action_units"]["AU4"] <= 0.3
    assert list(face["blendshapes"]) == list(BLENDSHAPES) and len(face["blendshapes"]) == 52


# ------------------------------------------------------------------------------------------------------ python
def test_without_the_option_nothing_loads_and_no_field_is_added(predictor, clip):
    result = predictor.predict(EXAMPLES / "astronaut.jpg")
    crop = predictor.predict_crop(EXAMPLES / "astronaut.jpg", (170, 70, 110, 110))
    video = predictor.predict_video(clip, fps=5, progress=False)
    assert predictor.au_reader is None
    assert not AU_FIELDS & set(result.to_dict()["faces"][0]) and not AU_FIELDS & set(crop.to_dict())
    assert "action_units" not in result.timings_ms
    assert not [c for c in video.to_pandas().columns if c.startswith("au_") or c == "action_units_reason"]


def test_predict_reads_each_faces_action_units_on_request(predictor):
    result = predictor.predict(EXAMPLES / "astronaut.jpg", action_units=True)
    (face,) = result.faces
    assert_smiling_astronaut(face.to_dict())
    assert predictor.au_reader is not None and "action_units" in result.timings_ms
    reader = predictor.au_reader
    (again,) = predictor.predict_batch([EXAMPLES / "astronaut.jpg"], action_units=True)
    assert predictor.au_reader is reader  # one shared reader per Predictor
    assert again.faces[0].action_units == face.action_units


def test_a_crop_too_small_gets_null_with_a_reason(predictor):
    tiny = predictor.predict_crop(EXAMPLES / "astronaut.jpg", (200, 100, 12, 12), action_units=True).to_dict()
    assert tiny["action_units"] is None and tiny["blendshapes"] is None
    assert "too small" in tiny["action_units_reason"]
    whole = predictor.predict_crop(EXAMPLES / "astronaut.jpg", (170, 70, 110, 110), action_units=True).to_dict()
    assert whole["action_units"]["AU12"] >= 0.5


# --------------------------------------------------------------------------------------------------- tracking
def face(au12: float | None, x: int = 100) -> FacePrediction:
    read = (FaceActionUnits({au: au12 for au in AU_TABLE}, {}, None) if au12 is not None
            else FaceActionUnits(None, None, "face too small for landmarks"))
    return FacePrediction((x, 50, 60, 60), "happy", 1.0, False, {"happy": 1.0}).with_action_units(read)


def test_the_tracker_smooths_action_units_like_probabilities_and_skips_frames_without():
    tracker = FaceTracker(ema=0.5)
    (first,) = tracker.track(0.0, [face(0.8)])
    (missing,) = tracker.track(0.2, [face(None, 102)])
    (second,) = tracker.track(0.4, [face(0.2, 104)])
    assert first.action_units["AU12"] == pytest.approx(0.8)
    assert missing.action_units is None and "too small" in missing.action_units_reason  # that frame's own
    assert second.action_units["AU12"] == pytest.approx(0.5 * 0.2 + 0.5 * 0.8)  # the None frame left no trace
    assert first.track == missing.track == second.track
    (plain,) = FaceTracker().track(0.0, [FacePrediction((0, 0, 9, 9), "sad", 1.0, False, {"sad": 1.0})])
    assert not plain.has_action_units


# -------------------------------------------------------------------------------------------------------- CLI
def test_cli_json_on_the_examples_folder_has_the_action_units(tiny_model, capsys):
    """The reporter's check: python -m emotion predict examples/ --json --action-units."""
    from emotion.__main__ import main

    assert main(["predict", str(EXAMPLES), "--json", "--action-units", "--model", f"local-dir:{tiny_model}"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert_smiling_astronaut(json.loads(line)["faces"][0])
    assert main(["predict", str(EXAMPLES / "astronaut.jpg"), "--action-units", "--model",
                 f"local-dir:{tiny_model}"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert len(text) == 2 and "face 1 action units: AU12 0.9" in text[1] and "lip corner puller" in text[1]


def test_predict_dataset_writes_au_columns_on_request(tiny_model, tmp_path):
    from emotion.__main__ import main

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "astronaut.jpg").write_bytes((EXAMPLES / "astronaut.jpg").read_bytes())
    model = ["--model", f"local-dir:{tiny_model}", "--no-progress"]
    assert main(["predict-dataset", str(photos), "--output", str(tmp_path / "plain"), *model]) == 0
    assert main(["predict-dataset", str(photos), "--output", str(tmp_path / "aus"), "--action-units", *model]) == 0
    plain, aus = pq.read_table(tmp_path / "plain"), pq.read_table(tmp_path / "aus")
    assert aus.column_names == [*plain.column_names[:-1], *AU_COLUMNS, "action_units_reason", "error"]
    (row,) = aus.to_pylist()
    assert row["au_12"] >= 0.5 and row["au_4"] <= 0.3 and row["action_units_reason"] is None
    # a folder written without the option is not resumed with it (its shards lack the columns)
    assert main(["predict-dataset", str(photos), "--output", str(tmp_path / "plain"), "--action-units",
                 *model]) == 2


def test_video_cli_writes_au_columns_smoothed_per_frame(tiny_model, clip, tmp_path, capsys):
    import pandas as pd

    from emotion.__main__ import main

    table = tmp_path / "t.csv"
    assert main(["predict", str(clip), "--model", f"local-dir:{tiny_model}", "--fps", "5", "--action-units",
                 "--csv", str(table)]) == 0
    frame = pd.read_csv(table)
    assert list(frame.columns[-len(AU_COLUMNS) - 1:]) == [*AU_COLUMNS, "action_units_reason"]
    assert len(frame) == 5 and (frame.au_12 >= 0.5).all() and (frame.au_4 <= 0.3).all()


# ------------------------------------------------------------------------------------------------------- REST
def upload(path: Path, name: str = "a.jpg", ctype: str = "image/jpeg") -> dict:
    return {"files": {"file": (name, path.read_bytes(), ctype)}}


@pytest.mark.parametrize("where", ["query", "form", "json"])
def test_rest_predict_adds_action_units_when_asked(client, where):
    import base64

    if where == "query":
        r = client.post("/api/predict", params={"action_units": "true"}, **upload(EXAMPLES / "astronaut.jpg"))
    elif where == "form":
        r = client.post("/api/predict", data={"action_units": "true"}, **upload(EXAMPLES / "astronaut.jpg"))
    else:
        image = base64.b64encode((EXAMPLES / "astronaut.jpg").read_bytes()).decode()
        r = client.post("/api/predict", json={"image": image, "action_units": True})
    assert r.status_code == 200, r.text
    assert_smiling_astronaut(r.json()["faces"][0])


def test_rest_without_the_option_answers_without_the_fields(client):
    r = client.post("/api/predict", **upload(EXAMPLES / "astronaut.jpg"))
    assert r.status_code == 200 and not AU_FIELDS & set(r.json()["faces"][0])
    r = client.post("/api/predict", params={"action_units": "false"}, **upload(EXAMPLES / "astronaut.jpg"))
    assert r.status_code == 200 and not AU_FIELDS & set(r.json()["faces"][0])


def test_rest_tiny_face_is_null_with_a_reason_and_a_bad_value_is_422(client):
    r = client.post("/api/predict", params={"action_units": "true", "x": 200, "y": 100, "w": 10, "h": 10},
                    **upload(EXAMPLES / "astronaut.jpg"))
    assert r.status_code == 200, r.text
    (face,) = r.json()["faces"]
    assert face["action_units"] is None and face["blendshapes"] is None and "too small" in face["action_units_reason"]
    r = client.post("/api/predict", params={"action_units": "maybe"}, **upload(EXAMPLES / "astronaut.jpg"))
    assert r.status_code == 422 and "action_units" in r.json()["error"] and "true or false" in r.json()["error"]


def test_rest_video_rows_have_smoothed_action_units_when_asked(client, clip):
    files = {"file": ("clip.mp4", clip.read_bytes(), "video/mp4")}
    asked = client.post("/api/predict_video?fps=5&action_units=true", files=files)
    plain = client.post("/api/predict_video?fps=5", files=files)
    assert asked.status_code == plain.status_code == 200, asked.text
    rows = asked.json()["rows"]
    assert len(rows) == 5 and all(r["au_12"] >= 0.5 and r["action_units_reason"] is None for r in rows)
    assert not [k for k in plain.json()["rows"][0] if k.startswith("au_")]
    bad = client.post("/api/predict_video?action_units=maybe", files=files)
    assert bad.status_code == 422 and "action_units (true or false)" in bad.json()["error"]


def test_openapi_documents_the_option_and_the_fields(client):
    spec = client.get("/openapi.json").json()
    params = [p["name"] for p in spec["paths"]["/api/predict"]["post"]["parameters"]]
    assert "action_units" in params
    face = spec["components"]["schemas"]["Face"]["properties"]
    assert AU_FIELDS <= set(face)


# --------------------------------------------------------------------------------------------------------- UI
def test_gradio_predict_takes_action_units_by_name(client, tiny_model):
    from test_app import gradio_call, gradio_upload

    info = client.get("/gradio_api/info").json()["named_endpoints"]["/predict"]["parameters"]
    assert [p["parameter_name"] for p in info][-1] == "action_units"
    ref = gradio_upload(client, "a.jpg", (EXAMPLES / "astronaut.jpg").read_bytes())
    event, out = gradio_call(client, "predict", [ref, tiny_model.name, 20, 0.5, "auto", True])
    assert event == "complete", out
    assert_smiling_astronaut(out[0]["faces"][0])
    event, out = gradio_call(client, "predict", [ref, tiny_model.name, 20, 0.5, "auto", "maybe"])
    assert event == "error" and "true or false" in out["error"]


def test_video_tab_draws_au_lines_and_writes_au_columns_when_asked(client, clip, tiny_model):
    import pandas as pd

    from test_app import gradio_call, gradio_upload

    ref = gradio_upload(client, "clip.mp4", clip.read_bytes())
    event, out = gradio_call(client, "predict_video", [ref, tiny_model.name, "fps", 5, 20, 0.5, True])
    assert event == "complete", out
    _, plot, _, _, csv = out
    lines = set(pd.DataFrame(plot["data"], columns=plot["columns"]).face)
    assert "Face 1: AU12" in lines and not {"Face 1: AU6", "Face 1: AU9", "Face 1: AU24"} & lines
    assert "au_12" in pd.read_csv(csv["path"]).columns


def test_the_au_chart_greys_what_the_model_cannot_show():
    from webapp import render

    face = {"emotion": "happy", "confidence": 0.9, "uncertain": False,
            "action_units": {au: 0.1 * (i % 10) for i, au in enumerate(AU_TABLE)}}
    table = render.au_table(face)
    assert list(table.au) == list(AU_TABLE)
    assert set(table[table.reading != "measured"].au) == {"AU6", "AU9", "AU24"}
    assert render.au_table({"action_units": None, "action_units_reason": "x"}) is None
    assert render.au_line(face).startswith(" · AU") and render.au_line({"emotion": "sad"}) == ""
