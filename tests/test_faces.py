"""Face detection and cropping: the boxes a user sees and the crops the model is fed."""
import math
import threading

import numpy as np
import pytest
from PIL import Image
from skimage import data

from emotion import faces
from emotion.errors import EmotionError
from emotion.faces import Face, FaceDetector, crop_box, crop_face
from emotion.images import load_image

from conftest import ASTRONAUT_FACE  # brow to chin, ear to ear (her hair reaches up to y ~ 15)


def iou(a, b):
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / (a[2] * a[3] + b[2] * b[3] - ix * iy)


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())


def test_astronaut_has_exactly_one_face_where_her_face_is(detector, astronaut):
    found = detector.detect(astronaut)
    assert len(found) == 1
    face = found[0]
    assert face.score > 0.7  # the default operating point is 0.5
    assert iou(face.box, ASTRONAUT_FACE) > 0.7
    (rx, ry), (lx, ly), (nx, ny), (mx, my) = face.keypoints[:4]
    assert len(face.keypoints) == 6
    assert 190 < rx < 215 and 195 < nx < 240 and 235 < lx < 260  # right eye is on the picture's left
    assert 95 < ry < 120 and 95 < ly < 120 and ry < ny < my < 165


def test_two_people_side_by_side_are_two_faces_left_to_right(detector, astronaut):
    canvas = Image.new("RGB", (1024, 512))
    canvas.paste(astronaut, (0, 0))
    canvas.paste(astronaut, (512, 0))
    found = detector.detect(canvas)
    assert len(found) == 2
    assert found[0].box[0] < 512 <= found[1].box[0]
    assert iou(found[1].box, (ASTRONAUT_FACE[0] + 512,) + ASTRONAUT_FACE[1:]) > 0.6
    assert len(detector.detect(canvas, max_faces=1)) == 1


@pytest.mark.parametrize("orientation,rotate", [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270)])
def test_phone_photo_with_exif_rotation_gives_the_same_box(detector, astronaut, tmp_path, orientation, rotate):
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    astronaut.transpose(rotate).save(path, quality=92, exif=exif)
    upright = detector.detect(astronaut)[0]
    found = detector.detect(load_image(path))
    assert len(found) == 1 and iou(found[0].box, upright.box) > 0.85


def test_blank_image_has_no_faces_and_no_error(detector):
    assert detector.detect(Image.new("RGB", (640, 480), (200, 200, 200))) == []
    assert detector.detect(Image.new("L", (64, 64))) == []  # any mode is accepted


def test_large_photo_is_detected_downscaled_and_mapped_back_to_original_pixels(detector, astronaut):
    assert detector.detect_side(3000) < 3000
    canvas = Image.new("RGB", (3000, 2000), (90, 120, 150))
    canvas.paste(astronaut.resize((1536, 1536)), (1300, 300))  # astronaut x3, face near (1830, 540)
    found = detector.detect(canvas)
    assert len(found) == 1
    x, y, w, h = ASTRONAUT_FACE
    assert iou(found[0].box, (1300 + 3 * x, 300 + 3 * y, 3 * w, 3 * h)) > 0.6
    (rx, ry), (lx, ly) = found[0].keypoints[:2]
    assert 1300 + 3 * 190 < rx < 1300 + 3 * 215 and 1300 + 3 * 235 < lx < 1300 + 3 * 260
    assert 300 + 3 * 95 < ry < 300 + 3 * 120


@pytest.mark.parametrize("size", [(1200, 800), (800, 1201), (2000, 1500), (700, 500), (660, 440), (64, 48)])
def test_the_whole_photo_pass_shrinks_fast_to_the_size_pillow_would(size):
    """The whole-photo pass's YuNet input (faces._shrunk_fast: Image.reduce, then OpenCV's bilinear resize) has the
    size faces._resized gives, and on a smooth photo pixels within a few grey levels of Pillow's BOX."""
    y, x = np.mgrid[0:size[1], 0:size[0]]
    smooth = np.stack([(x * 255 // size[0]), (y * 255 // size[1]), ((x + y) * 127 // sum(size))], -1)
    rgb = Image.fromarray(smooth.astype(np.uint8))
    for side in (faces.DETECT_SIDE, faces.MAX_DETECT_SIDE, faces.MIN_SIDE):
        fast, slow = faces._shrunk_fast(rgb, side), np.asarray(faces._resized(rgb, side))
        assert fast.shape == slow.shape and fast.dtype == np.uint8
        assert np.abs(fast.astype(int) - slow).mean() < 2


def test_views_of_the_whole_photo_pass_are_cut_from_the_photo_not_from_its_fast_shrink(detector, astronaut,
                                                                                        monkeypatch):
    """Only YuNet sees the fast-shrunk image: a face found by the whole-photo pass gets its view (box, eyes, and so
    its crop) from the photo's own pixels, reduced by a whole factor where it is large."""
    canvas = Image.new("RGB", (1500, 1000), (90, 110, 100))
    canvas.paste(astronaut.resize((400, 400)), (900, 300))  # her face ~75 px: a small face, not a portrait
    sources = []
    real = faces.view_source

    def recording(rgb, work, candidates, finer=None):
        source = real(rgb, work, candidates, finer)
        sources.append((work is None, source.size))
        return source

    monkeypatch.setattr(faces, "view_source", recording)
    found = detector.detect(canvas, range="full")
    assert len(found) == 1 and iou(found[0].box, (900 + 178 * 400 // 512, 300 + 80 * 400 // 512, 74, 78)) > 0.5
    assert sources and all(none for none, _ in sources)  # the pass offered no image of its own ...
    assert all(size[0] in (1500, 1500 // 2) for _, size in sources)  # ... cut at full or a whole-factor scale


def test_each_range_finds_the_face_too(astronaut):
    for name in faces.RANGES:
        found = FaceDetector(range=name).detect(astronaut)
        assert len(found) == 1 and iou(found[0].box, ASTRONAUT_FACE) > 0.7, name


def test_invalid_options_name_the_valid_choices(detector, astronaut):
    with pytest.raises(EmotionError, match="range must be one of short, full, auto"):
        FaceDetector(range="far")
    with pytest.raises(EmotionError, match="range must be one of"):
        detector.detect(astronaut, range="long")
    with pytest.raises(EmotionError, match="min_score must be between 0 and 1"):
        FaceDetector(min_score=2)
    with pytest.raises(EmotionError, match="load_image"):
        detector.detect(np.asarray(astronaut))


def test_min_score_filters_per_call(detector, astronaut):
    assert detector.detect(astronaut, min_score=0.99) == []
    assert len(detector.detect(astronaut)) == 1  # the default threshold is untouched


def test_detect_is_safe_from_several_threads(detector, astronaut):
    expected = detector.detect(astronaut)
    results, errors = [], []

    def work():
        try:
            for _ in range(10):
                results.append(detector.detect(astronaut))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 40 and all(r == expected for r in results)


def test_crop_face_is_a_square_with_level_eyes(detector, astronaut):
    tilted = astronaut.rotate(25, resample=Image.BILINEAR, expand=True, fillcolor=(128, 128, 128))
    face = detector.detect(tilted)[0]
    (rx, ry), (lx, ly) = face.keypoints[:2]
    assert abs(math.degrees(math.atan2(ly - ry, lx - rx))) > 15  # the eyes really are tilted
    crop = crop_face(tilted, face, margin=0.25)
    side = round(max(face.box[2:]) * 1.5)
    assert crop.size == (side, side) and crop.mode == "RGB"
    again = detector.detect(crop)
    assert len(again) == 1
    (rx, ry), (lx, ly) = again[0].keypoints[:2]
    assert abs(math.degrees(math.atan2(ly - ry, lx - rx))) < 5
    assert crop_face(tilted, face, margin=0.0, align=False).size == (max(face.box[2:]),) * 2


def test_crop_face_at_the_border_repeats_edge_pixels_instead_of_black():
    image = Image.new("RGB", (100, 80), (200, 10, 10))
    face = Face(box=(0, 0, 30, 30), score=0.9, keypoints=((8.0, 10.0), (22.0, 14.0)))
    crop = crop_face(image, face, margin=0.5)
    assert crop.size == (60, 60)
    assert np.all(np.asarray(crop) == (200, 10, 10))


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_crop_face_resamples_as_pils_affine_transform(astronaut, mode):
    """OpenCV cuts the crops (several times faster); the pixels must stay the ones the models were trained on, which
    PIL's Image.transform cut: the same crop within one grey level, almost every pixel exact."""
    image = astronaut.convert(mode)
    for box, eyes in (((178, 80, 94, 100), ((200.0, 118.0), (251.0, 126.0))),  # tilted, inside the photo
                      ((-10, 430, 90, 100), ((10.0, 460.0), (60.0, 440.0)))):  # over the edge: edges repeat
        face = Face(box=box, score=0.9, keypoints=eyes)
        x, y, w, h = box
        side = round(max(w, h) * 1.2)
        angle = math.atan2(eyes[1][1] - eyes[0][1], eyes[1][0] - eyes[0][0])
        cx, cy = x + w / 2 + 0.1 * max(w, h) * math.sin(angle), y + h / 2 - 0.1 * max(w, h) * math.cos(angle)
        reach = side / 2 * (abs(math.cos(angle)) + abs(math.sin(angle))) + 2
        x0, y0 = math.floor(cx - reach), math.floor(cy - reach)
        padded = Image.fromarray(np.pad(np.asarray(image), [(50, 50), (50, 50)] + [(0, 0)] * (mode != "L"),
                                        mode="edge"), mode)
        patch = padded.crop((x0 + 50, y0 + 50, math.ceil(cx + reach) + 50, math.ceil(cy + reach) + 50))
        c, s = math.cos(angle), math.sin(angle)
        px, py = cx - x0, cy - y0
        want = np.asarray(patch.transform((side, side), Image.AFFINE, (c, -s, px - side / 2 * (c - s), s, c,
                                                                       py - side / 2 * (s + c)), Image.BILINEAR))
        got = np.asarray(crop_face(image, face, margin=0.1, offset_y=-0.1))
        assert got.shape == want.shape and crop_face(image, face).mode == mode
        diff = np.abs(got.astype(int) - want.astype(int))
        assert diff.max() <= 1 and (diff == 0).mean() > 0.99, (box, mode, diff.max(), (diff == 0).mean())


def test_crop_box_cuts_valid_boxes_and_refuses_bad_ones(astronaut):
    assert crop_box(astronaut, (10, 20, 30, 40)).size == (30, 40)
    for bad, words in [((500, 0, 20, 20), "goes outside the 512x512 image"), ((-1, 0, 20, 20), "goes outside"),
                       ((0, 0, 0, 10), "is empty"), ((0, 0, 10), "four"), ("abcd", "four numbers")]:
        with pytest.raises(EmotionError, match=words):
            crop_box(astronaut, bad)


@pytest.mark.parametrize("side", [120, 100])  # her face ~23 and ~20 px in the file
def test_a_small_face_in_a_large_jpeg_is_found_from_its_bytes_as_from_the_decoded_photo(detector, astronaut, side):
    """A 1920x1080 JPEG is searched at half scale from its bytes (decode_and_find): its whole-photo pass still runs
    at the side the file's size asks for (960), and a face too small there for its view is looked at in a finer
    decode, so what the decoded photo finds is found from the bytes too (both were missed from the bytes before:
    the pass ran at 640 of the 960 decoded, and the view was cut from the half-scale pixels)."""
    import io

    canvas = Image.new("RGB", (1920, 1080), (128, 128, 128))
    canvas.paste(astronaut.resize((side, side)), (1300, 500))
    buf = io.BytesIO()
    canvas.save(buf, "JPEG", quality=90)
    whole = detector.detect(load_image(buf.getvalue()))
    img, found = faces.decode_and_find(buf.getvalue(), detector)
    assert len(whole) == 1 and len(found.faces) == 1
    k = 1920 / img.width
    box = tuple(round(v * k) for v in found.faces[0].box)
    assert iou(box, whole[0].box) > 0.6
    assert 0 < found.decode_ms


def test_a_video_frames_followed_faces_are_viewed_in_the_frame_itself_as_the_live_page_views_them(detector,
                                                                                                 astronaut,
                                                                                                 monkeypatch):
    """FaceDetector.follow: the previous frame's boxes are looked at in views cut from the frame at full scale
    (faces.js followFaces does the same), not from a reduced copy, which the whole-photo pass's views use."""
    sources = []
    real = faces.view_source

    def recording(rgb, work, candidates, finer=None):
        source = real(rgb, work, candidates, finer)
        sources.append((rgb.size, source.size, len(candidates)))
        return source

    monkeypatch.setattr(faces, "view_source", recording)
    (face,) = detector.detect(astronaut)
    sources.clear()
    followed = detector.follow(astronaut, [face.box], range="full").faces  # "full": no near pass, the hint alone
    assert len(followed) == 1 and iou(followed[0].box, face.box) > 0.8
    assert sources == [((512, 512), (512, 512), 1)]
