"""Group photos: small and many faces are found, scores do not depend on where a face is, nothing is cut silently."""
from __future__ import annotations

import json

import pytest
from PIL import Image
from skimage import data

from emotion import Predictor
from emotion.boxes import nms, positions, tiles
from emotion.faces import FaceDetector

from conftest import ASTRONAUT_FACE


@pytest.fixture(scope="module")
def head() -> Image.Image:
    """The astronaut's head with some hair and neck: what a face in a group photo looks like."""
    x, y, w, h = ASTRONAUT_FACE
    return Image.fromarray(data.astronaut()).crop((x - 38, y - 50, x + w + 38, y + h + 26))


def grid(head: Image.Image, columns: int, rows: int, face: int, size: tuple[int, int]) -> Image.Image:
    """`columns` x `rows` copies of the head, its face ~`face` px, spread over a gray canvas of `size`."""
    side = round(face * head.width / ASTRONAUT_FACE[2])
    canvas = Image.new("RGB", size, (128, 128, 128))
    for i in range(columns):
        for j in range(rows):
            canvas.paste(head.resize((side, side)), (i * size[0] // columns, j * size[1] // rows))
    return canvas


def test_three_copies_of_one_face_are_all_found_with_the_same_score(detector, head):
    canvas = Image.new("RGB", (1600, 600), (128, 128, 128))
    for x, y in ((60, 40), (700, 300), (1380, 140)):  # different places relative to any tile or anchor grid
        canvas.paste(head, (x, y))
    found = detector.detect(canvas)
    assert len(found) == 3
    scores = [f.score for f in found]
    assert min(scores) > 0.7 and max(scores) - min(scores) < 0.1, scores  # was 0.41-0.70, one missed


def test_forty_faces_of_96_px_in_a_wide_photo_are_all_found(detector, head):
    found = detector.find(grid(head, 8, 5, 96, (1408, 880)), max_faces=100)
    assert found.total == 40 and not found.truncated


def test_small_faces_of_30_px_are_found(detector, head):
    found = detector.find(grid(head, 6, 4, 30, (900, 600)), max_faces=100)
    assert 22 <= found.total <= 24  # the 24-40 px floor is 90% (bench_detect.py)


@pytest.mark.parametrize("name", ["coffee", "chelsea", "rocket"])
def test_photos_without_a_face_give_no_face(detector, name):
    assert detector.detect(Image.fromarray(getattr(data, name)())) == []


def test_a_portrait_is_not_tiled(astronaut):
    """The astronaut alone costs one short-range pass and two views of her face: no full-range pass, no tiles
    (tests/test_search_paths.py checks each decision)."""
    det = FaceDetector()
    assert len(det.detect(Image.fromarray(astronaut))) == 1
    assert det.passes == {"short": 1, "views": 2}
    det.close()


@pytest.mark.parametrize("fraction", [0.4, 0.6, 0.9])
def test_a_close_up_is_found_whichever_pass_sees_it(detector, astronaut, fraction):
    """A selfie's close-up (the face filling up to 90% of the photo) is found and nothing else is."""
    x, y, w, h = ASTRONAUT_FACE
    side = w / fraction
    cx, cy = x + w / 2, y + h / 2
    crop = Image.fromarray(astronaut).crop((round(cx - side / 2), round(cy - side / 2), round(cx + side / 2),
                                            round(cy + side / 2))).resize((480, 480))
    assert len(detector.detect(crop)) == 1


def test_a_smaller_face_beside_a_portrait_is_found_by_the_far_search(detector, head):
    """One face near the camera and one at ~8% of the side: "auto" takes the photo for a portrait (the short-range
    pass is all it runs), "full" (the UI's Far) searches on and finds both."""
    canvas = Image.new("RGB", (1000, 700), (128, 128, 128))
    canvas.paste(head.resize((400, 400)), (60, 150))
    canvas.paste(head.resize((140, 140)), (700, 300))  # its face ~80 px: 8% of the long side
    assert len(detector.detect(canvas)) == 1
    assert len(detector.detect(canvas, range="full")) == 2


def test_following_small_faces_finds_them_again_without_the_tiles(head, monkeypatch):
    """A video's frames between full searches: faces only the tiles found are looked for around their last box."""
    det = FaceDetector()
    frame = grid(head, 3, 1, 40, (1280, 720))  # three 40 px faces: too small for the whole-frame passes
    calls = []
    original = det._run
    monkeypatch.setattr(det, "_run", lambda model, image, *a: calls.append(image.size) or original(model, image, *a))
    found = det.find(frame)
    full_calls = len(calls)
    assert len(found.faces) == 3
    calls.clear()
    moved = Image.new("RGB", frame.size, (128, 128, 128))
    moved.paste(frame, (6, 4))  # the next frame: everyone moved a little
    followed = det.follow(moved, [f.box for f in found.faces])
    assert len(followed.faces) == 3
    for before, after in zip(found.faces, followed.faces):
        assert after.box[0] - before.box[0] == pytest.approx(6, abs=3)
        assert after.score == pytest.approx(before.score, abs=0.1)  # the same calibrated score
    assert len(calls) <= 2 + 2 * 3 < full_calls / 3  # two whole-frame passes and two views a face
    assert det.follow(moved, []).faces == []  # and without the previous boxes, no tiles: not found
    det.close()


def test_max_faces_cut_is_reported_with_the_total(tiny_model, head, tmp_path):
    predictor = Predictor.from_pretrained(f"local-dir:{tiny_model}")
    photo = grid(head, 4, 3, 80, (800, 600))
    result = predictor.predict(photo, max_faces=5)
    assert len(result.faces) == 5 and result.faces_total == 12 and result.truncated
    assert json.loads(json.dumps(result.to_dict()))["faces_total"] == 12
    assert result.to_dict()["truncated"] is True
    whole = predictor.predict(photo, max_faces=20)
    assert whole.faces_total == 12 and not whole.truncated and whole.to_dict()["truncated"] is False
    # the 5 kept are the 5 best-scoring of the 12
    best = sorted((f.detection_score for f in whole.faces), reverse=True)[:5]
    assert sorted((f.detection_score for f in result.faces), reverse=True) == pytest.approx(best)


def test_rest_and_cli_say_when_max_faces_cut(tiny_model, head, tmp_path, capsys, monkeypatch):
    from fastapi.testclient import TestClient

    import app as app_module
    from emotion.__main__ import main

    path = tmp_path / "class.png"
    grid(head, 4, 3, 80, (800, 600)).save(path)
    assert main(["predict", str(path), "--model", f"local-dir:{tiny_model}", "--max-faces", "3"]) == 0
    out = capsys.readouterr().out
    assert "showing the 3 highest-scoring of 12 faces" in out and out.count(": face ") == 3
    monkeypatch.setenv("EMOTION_MODEL", f"local-dir:{tiny_model}")
    monkeypatch.delenv("EMOTION_MODELS", raising=False)
    with TestClient(app_module.create_app()) as client:
        body = client.post("/api/predict?max_faces=3", files={"file": ("c.png", path.read_bytes(), "image/png")})
    assert body.status_code == 200
    assert body.json()["truncated"] is True and body.json()["faces_total"] == 12 and len(body.json()["faces"]) == 3


def test_tiles_cover_the_image_and_overlap():
    assert positions(100, 300, 60) == [0]
    xs = positions(1000, 300, 60)
    assert xs[0] == 0 and xs[-1] == 700 and all(b - a <= 240 for a, b in zip(xs, xs[1:]))
    assert len(tiles(1000, 500, 300, 60)) == len(xs) * len(positions(500, 300, 60))


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = [((0, 0, 10, 10), 0.5), ((1, 1, 10, 10), 0.9), ((50, 50, 10, 10), 0.1)]
    kept = nms(boxes, lambda b: b[0], lambda b: b[1], 0.5)
    assert kept == [((1, 1, 10, 10), 0.9), ((50, 50, 10, 10), 0.1)]
