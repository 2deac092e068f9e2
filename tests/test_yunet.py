"""YuNet in ONNX Runtime: the shipped file, its decoding (the same boxes as OpenCV's FaceDetectorYN), any size."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image
from skimage import data

from emotion.errors import EmotionError
from emotion.yunet import MODEL_PATH, SHA256, YuNet, read_model

from conftest import ASTRONAUT_FACE


@pytest.fixture(scope="module")
def yunet() -> YuNet:
    return YuNet()


def scenes() -> dict[str, np.ndarray]:
    """Photos of 0, 1 and 6 faces at sizes that are and are not multiples of 32."""
    astronaut = Image.fromarray(data.astronaut())
    group = Image.new("RGB", (1000, 630), (128, 128, 128))
    for i in range(3):
        for j in range(2):
            group.paste(astronaut.resize((200, 200)), (60 + i * 320, 40 + j * 300))
    return {"astronaut": np.asarray(astronaut), "group": np.asarray(group),
            "coffee": np.asarray(Image.fromarray(data.coffee()).resize((451, 301)))}


def test_the_shipped_model_is_the_published_file():
    assert hashlib.sha256(MODEL_PATH.read_bytes()).hexdigest() == SHA256
    assert (MODEL_PATH.parent / "face_detection_yunet_LICENSE").read_text().startswith("MIT License")


def test_a_changed_model_file_is_refused_with_the_fix(tmp_path):
    changed = tmp_path / "yunet.onnx"
    changed.write_bytes(MODEL_PATH.read_bytes()[:-1] + b"\0")
    with pytest.raises(EmotionError, match="restore the file"):
        read_model(changed)
    with pytest.raises(EmotionError, match="cannot read"):
        read_model(tmp_path / "missing.onnx")


def test_boxes_landmarks_and_scores_match_opencv(yunet):
    cv2 = pytest.importorskip("cv2", reason="OpenCV (opencv-python) is what the decoding is checked against")
    for name, rgb in scenes().items():
        height, width = rgb.shape[:2]
        reference = cv2.FaceDetectorYN.create(str(MODEL_PATH), "", (width, height), 0.6, 0.3, 5000)
        _, expected = reference.detect(np.ascontiguousarray(rgb[:, :, ::-1]))
        expected = np.zeros((0, 15), np.float32) if expected is None else expected
        ours = yunet.detect(rgb, 0.6)
        assert len(ours) == len(expected), name
        order = np.lexsort((expected[:, 1], expected[:, 0]))  # both sorted by position, not by score ties
        mine = np.lexsort((ours[:, 1], ours[:, 0]))
        np.testing.assert_allclose(ours[mine], expected[order], atol=1e-3, err_msg=name)
    assert len(yunet.detect(scenes()["group"], 0.6)) == 6


def test_the_astronaut_is_found_at_any_size(yunet):
    astronaut = Image.fromarray(data.astronaut())
    for side in (96, 200, 512, 777):  # any size: the input is padded to multiples of 32
        rows = yunet.detect(np.asarray(astronaut.resize((side, side))), 0.6)
        assert len(rows) == 1, side
        x, y, w, h = rows[0, :4] * 512 / side
        assert abs(x + w / 2 - (ASTRONAUT_FACE[0] + ASTRONAUT_FACE[2] / 2)) < 12
        assert abs(y + h / 2 - (ASTRONAUT_FACE[1] + ASTRONAUT_FACE[3] / 2)) < 24  # it reaches up the forehead
        assert h > w  # YuNet's box is taller than wide


@pytest.mark.parametrize("height,width", [(61, 97), (64, 96), (540, 960), (1, 1)])
def test_the_input_is_bgr_planes_padded_with_black(height, width):
    """input_blob writes each plane from its own copy (fast); it must equal the plain formula: BGR, 0-255, padded
    below and right to multiples of 32 with zeros."""
    from emotion.yunet import DIVISOR, input_blob

    rgb = np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    pad_h, pad_w = -(-height // DIVISOR) * DIVISOR, -(-width // DIVISOR) * DIVISOR
    expected = np.zeros((1, 3, pad_h, pad_w), np.float32)
    for image in (rgb, rgb[:, ::-1]):  # and a view that is not contiguous
        expected[0, :, :height, :width] = image[:, :, ::-1].transpose(2, 0, 1)
        np.testing.assert_array_equal(input_blob(image), expected)
