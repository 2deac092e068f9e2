"""Which passes a face search takes: a portrait or a webcam frame stops after the short-range pass, a photo that
leaves room for smaller faces gets the full-range pass and the tiles, and what each path must still find."""
from __future__ import annotations

import pytest
from PIL import Image
from skimage import data

from emotion.boxes import has_room, iou
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
def test_a_portrait_or_webcam_frame_takes_one_short_range_pass_and_its_views(det, size):
    photo = Image.fromarray(data.astronaut()).resize((size[0], size[0])).crop((0, 0) + size)
    faces = det.detect(photo)
    assert len(faces) == 1
    assert det.passes == {"short": 1, "views": 2}


def test_a_small_face_on_a_1080p_photo_is_found_by_the_tiles(det, head):
    photo = Image.new("RGB", (1920, 1080), (128, 128, 128))
    photo.paste(head_of(head, 96), (1200, 500))  # its face 5% of the long side: too small for whole-photo passes
    faces = det.detect(photo)
    x, y, w, h = ASTRONAUT_FACE
    k = 96 / w
    expected = (1200 + 38 * k, 500 + 50 * k, w * k, h * k)
    assert len(faces) == 1 and iou(faces[0].box, expected) > 0.5
    assert det.passes["short"] == det.passes["full"] == 1 and det.passes["tiles"] > 0


def test_near_faces_that_fill_a_group_photo_end_the_search_after_the_short_pass(det, head):
    """Six faces of ~190 px in two rows of three fill 1200 x 800 with their people: nothing farther can show."""
    photo = Image.new("RGB", (1200, 800), (128, 128, 128))
    big = head_of(head, 190)
    for i in range(3):
        for j in range(2):
            photo.paste(big, (i * 400 + (400 - big.width) // 2, j * 400 + (400 - big.height) // 2))
    assert len(det.detect(photo)) == 6
    assert det.passes == {"short": 1, "views": 12}


def test_near_faces_that_leave_room_above_them_are_searched_further(det, head):
    """Three near faces in a row along the bottom, one small face in the sky above them: found by the tiles."""
    photo = Image.new("RGB", (1200, 1000), (128, 128, 128))
    big = head_of(head, 190)
    for i in range(3):
        photo.paste(big, (i * 400 + (400 - big.width) // 2, 1000 - big.height))
    photo.paste(head_of(head, 60), (560, 60))
    faces = det.detect(photo)
    assert len(faces) == 4 and min(f.box[2] for f in faces) < 100
    assert det.passes["tiles"] > 0


def test_a_face_following_a_video_runs_one_whole_frame_pass(det, head):
    frame = Image.new("RGB", (1280, 720), (128, 128, 128))
    frame.paste(head_of(head, 140), (100, 150))  # 11% of the side: the short-range pass cannot see it
    frame.paste(head_of(head, 140), (900, 350))
    found = det.find(frame)
    det.passes.clear()
    followed = det.follow(frame, [f.box for f in found.faces])
    assert [f.box for f in followed.faces] == [f.box for f in found.faces]
    assert det.passes == {"short": 1, "views": 4}


def test_room_is_a_free_square_of_the_given_side():
    assert not has_room(100, 100, [(-10, -10, 110, 110)], 20)
    assert has_room(100, 100, [(0, 0, 100, 70)], 20)  # a 30 px strip at the bottom holds a 20 px square
    assert not has_room(100, 100, [(0, 0, 100, 90)], 20)  # a 10 px strip does not
    assert has_room(100, 100, [], 20) and not has_room(10, 10, [], 20)
    assert not has_room(100, 100, [(0, 0, 45, 100), (55, 0, 100, 100)], 20)  # a 10 px gap between two people
