"""BlazeFace short range in ONNX Runtime (the views of emotion/faces.py): the shipped conversion, and the same
detections as MediaPipe's own FaceDetector on the same 128 px views."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image
from skimage import data

from emotion.blazeface import ANCHORS, ONNX_PATH, SHA256, BlazeFace, read_model
from emotion.errors import EmotionError


def views() -> np.ndarray:
    """The astronaut's face filling 20-80% of a view, shifted and tilted, and two views without a face."""
    astronaut = Image.fromarray(data.astronaut())
    out = []
    for fill, dx, tilt in ((0.3, 0, 0), (0.5, 10, 0), (0.3, -15, 20), (0.6, 5, -15), (0.2, 0, 0), (0.8, 0, 0)):
        side, cx, cy = 94 / fill, 225 + dx, 130
        turned = astronaut.rotate(tilt, center=(cx, cy))
        out.append(turned.crop((round(cx - side / 2), round(cy - side / 2), round(cx + side / 2),
                                round(cy + side / 2))).resize((128, 128), Image.BILINEAR))
    out += [Image.fromarray(getattr(data, name)()).resize((128, 128)) for name in ("coffee", "chelsea")]
    return np.stack([np.asarray(v) for v in out])


def test_the_shipped_conversion_is_the_recorded_file_and_a_changed_one_is_refused(tmp_path):
    assert hashlib.sha256(ONNX_PATH.read_bytes()).hexdigest() == SHA256
    changed = tmp_path / "b.onnx"
    changed.write_bytes(ONNX_PATH.read_bytes()[:-1] + b"\0")
    with pytest.raises(EmotionError, match="make_blazeface_onnx"):
        read_model(changed)


def test_anchors_are_mediapipes_short_range_grid():
    assert ANCHORS.shape == (896, 2)
    assert ANCHORS[0] == pytest.approx([1 / 32, 1 / 32]) and ANCHORS[1] == pytest.approx([1 / 32, 1 / 32])
    assert ANCHORS[512] == pytest.approx([1 / 16, 1 / 16]) and ANCHORS[-1] == pytest.approx([15 / 16, 15 / 16])


def test_detections_match_mediapipe(monkeypatch):
    pytest.importorskip("mediapipe", reason="MediaPipe's FaceDetector is what the decoding is checked against")
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    from emotion.blazeface import MODEL_PATH

    options = vision.FaceDetectorOptions(base_options=BaseOptions(model_asset_path=str(MODEL_PATH)),
                                         running_mode=vision.RunningMode.IMAGE, min_detection_confidence=0.05)
    reference = vision.FaceDetector.create_from_options(options)
    batch = views()
    ours = BlazeFace(0.05).detect(batch)  # one batch of eight views
    try:
        for pixels, mine in zip(batch, ours):
            theirs = sorted(reference.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=pixels)).detections,
                            key=lambda d: -d.categories[0].score)
            assert len(mine) == len(theirs)
            for (box, score, points), d in zip(mine, theirs):
                assert score == pytest.approx(d.categories[0].score, abs=1e-4)
                np.testing.assert_allclose(points, [(k.x * 128, k.y * 128) for k in d.keypoints], atol=0.05)
                b = d.bounding_box  # MediaPipe's pixel box: whole pixels, clipped to the view
                if box[1] >= 0 and box[0] >= 0:
                    assert box == (b.origin_x, b.origin_y, b.width, b.height)
    finally:
        reference.close()
    assert [round(s, 2) for _, s, _ in ours[0][:1]] == [0.94]  # the face, where it is in every view but the last 2


def test_a_degenerate_box_from_the_network_ends_the_suppression_instead_of_looping_forever():
    """A detection above the floor with no area (the network's width and height 0) has no IoU with itself: the
    weighted suppression once kept it in the queue forever (a worker, or the /live page, hung). It is now its own
    detection, and the others are still found."""
    import threading

    from emotion.blazeface import ANCHORS, _decoded

    raw = np.zeros((len(ANCHORS), 16), np.float32)  # anchor 0: a box of size 0 at its centre
    raw[100, 2:4] = 20  # anchor 100: a 20 px box
    score = np.full(len(ANCHORS), 0.001, np.float32)
    score[0], score[100] = 0.99, 0.9
    done = []
    worker = threading.Thread(target=lambda: done.append(_decoded(raw, score, 0.05)), daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert done, "the suppression did not end"
    (degenerate, _, _), (box, best, _) = done[0]
    assert degenerate[2:] == (0.0, 0.0) and box[2:] == (20.0, 20.0) and best == pytest.approx(0.9)
