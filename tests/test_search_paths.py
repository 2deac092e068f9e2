"""Which passes a face search takes: a portrait or a webcam frame stops after the near pass, any other photo gets
one whole-photo pass, every face one view; and what each path must still find."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw
from skimage import data

from emotion.boxes import iou
from emotion.faces import FaceDetector

from conftest import ASTRONAUT_FACE


@pytest.fixture(scope="module")
def head() -> Image.Image:
    """The astronaut's head with some hair and neck (170 x 176 px, her face 94 px wide in it)."""
    x, y, w, h = ASTRONAUT_FACE
    return Image.fromarray(data.astronaut()).crop((x - 38, y - 50, x + w + 38, y + h + 26))


def head_of(head: Image.Image, face: int) -> Image.Image:
    """The head scaled so that its face is about `face` px wide."""
    side = round(face * head.width / ASTRONAUT_FACE[2])
    return head.resize((side, side))


@pytest.fixture
def det():
    detector = FaceDetector()
    yield detector
    detector.close()


@pytest.mark.parametrize("size", [(512, 512), (640, 480)])
def test_a_portrait_or_webcam_frame_takes_the_near_pass_and_one_view(det, size):
    photo = Image.fromarray(data.astronaut()).resize((size[0], size[0])).crop((0, 0) + size)
    faces = det.detect(photo)
    assert len(faces) == 1
    assert det.passes == {"near": 1, "views": 1}


def test_a_group_photo_takes_one_whole_photo_pass_and_one_view_a_face(det, head):
    """Six faces of ~190 px in two rows of three: more than a portrait's two, so the whole photo is searched once;
    the faces the near pass confirmed are not looked at again."""
    photo = Image.new("RGB", (1200, 800), (128, 128, 128))
    big = head_of(head, 190)
    for i in range(3):
        for j in range(2):
            photo.paste(big, (i * 400 + (400 - big.width) // 2, j * 400 + (400 - big.height) // 2))
    assert len(det.detect(photo)) == 6
    assert det.passes == {"near": 1, "photo": 1, "views": 6}


def test_a_small_face_on_a_1080p_photo_is_found_by_the_whole_photo_pass(det, head):
    photo = Image.new("RGB", (1920, 1080), (128, 128, 128))
    photo.paste(head_of(head, 56), (1200, 500))  # its face 3% of the long side: too small for the near pass
    faces = det.detect(photo)
    x, y, w, h = ASTRONAUT_FACE
    k = 56 / w
    expected = (1200 + 38 * k, 500 + 50 * k, w * k, h * k)
    assert len(faces) == 1 and iou(faces[0].box, expected) > 0.5
    assert det.passes == {"near": 1, "photo": 1, "views": 1}
    assert det.detect(photo, range="short") == []  # "short": the near pass only


def test_a_smaller_face_beside_a_portrait_is_found_by_the_full_range_only(det, head):
    """One face near the camera and one at ~4% of the side: "auto" takes the photo for a portrait (the near pass is
    all it runs), "full" searches the whole photo and finds both."""
    canvas = Image.new("RGB", (1000, 700), (128, 128, 128))
    canvas.paste(head_of(head, 220), (60, 150))
    canvas.paste(head_of(head, 40), (700, 300))
    assert len(det.detect(canvas)) == 1
    assert len(det.detect(canvas, range="full")) == 2


def test_a_video_frame_is_searched_as_a_photo(det, head):
    """Two faces at 11% of a 720p frame: the near pass finds them, two are a portrait's count but not its size, so
    the frame gets the whole-frame pass too; no face is viewed twice."""
    frame = Image.new("RGB", (1280, 720), (128, 128, 128))
    frame.paste(head_of(head, 140), (100, 150))
    frame.paste(head_of(head, 140), (900, 350))
    assert len(det.detect(frame)) == 2
    assert det.passes == {"near": 1, "photo": 1, "views": 2}


def test_a_face_blazeface_cannot_see_is_kept_on_yunets_view(det, head, monkeypatch):
    """Where BlazeFace sees nothing in a view (dark glasses, a mask), YuNet's own view of it decides: the face is
    kept with YuNet's box and four keypoints (eyes, nose tip, mouth centre)."""
    photo = Image.new("RGB", (800, 600), (128, 128, 128))
    photo.paste(head_of(head, 150), (300, 150))
    monkeypatch.setattr(det.blazeface, "detect", lambda views: [[] for _ in views])
    faces = det.detect(photo)
    assert len(faces) == 1 and len(faces[0].keypoints) == 4 and faces[0].score > 0.5
    assert det.passes["yunet views"] == det.passes["views"] == 1


def test_dark_glasses_are_still_a_face(det, head):
    glasses = head.copy()
    draw = ImageDraw.Draw(glasses)
    for cx in (63, 105):  # over her eyes
        draw.ellipse((cx - 17, 60, cx + 17, 82), fill=(10, 10, 10))
    photo = Image.new("RGB", (1200, 800), (128, 128, 128))
    photo.paste(glasses.resize((300, 300)), (200, 200))
    photo.paste(head.resize((300, 300)), (700, 200))
    assert len(det.detect(photo)) == 2


@pytest.mark.parametrize("name", ["blank", "brick", "grass", "landscape"])
def test_no_face_where_there_is_none(det, name):
    """A blank image, textured walls and ground, a landscape: no face, whatever the range."""
    if name == "blank":
        photo = Image.new("RGB", (1200, 800), (235, 235, 235))
    elif name == "landscape":  # sky, hills and a lake: smooth gradients and a horizon
        y = np.linspace(0, 1, 600)[:, None, None]
        x = np.linspace(0, 1, 900)[None, :, None]
        sky = np.array([120, 170, 230]) * (1 - y) + np.array([230, 240, 250]) * y
        hills = np.array([60, 110, 50]) * (1 + 0.3 * np.sin(12 * x))
        lake = np.array([40, 80, 120]) * (1 + 0.1 * np.sin(40 * x + 30 * y))
        photo_array = np.where(y < 0.45 + 0.05 * np.sin(6 * x), sky, np.where(y < 0.7, hills, lake))
        photo = Image.fromarray(np.clip(photo_array, 0, 255).astype(np.uint8))
    else:
        photo = Image.fromarray(getattr(data, name)()).convert("RGB").resize((1024, 1024))
    for search in ("auto", "full", "short"):
        assert det.detect(photo, range=search) == [], search
