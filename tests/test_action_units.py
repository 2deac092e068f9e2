"""Action units from the Face Landmarker's blendshapes: the shipped model, the mapping table, the reader per face."""
from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emotion import action_units as au
from emotion.errors import EmotionError

ROOT = Path(__file__).resolve().parents[1]
BLENDSHAPE_NAMES = list(au.BLENDSHAPES)


@pytest.fixture(scope="module")
def reader():
    r = au.ActionUnitReader()
    yield r
    r.close()


@pytest.fixture(scope="module")
def photo():
    return np.asarray(Image.open(ROOT / "examples" / "astronaut.jpg").convert("RGB"))


def test_shipped_landmarker_has_the_documented_digest():
    assert hashlib.sha256(au.MODEL_PATH.read_bytes()).hexdigest() == au.MODEL_SHA256
    assert au.MODEL_SHA256 in (ROOT / "emotion" / "assets" / "README.md").read_text()


def test_a_changed_model_file_is_refused_with_the_fix(tmp_path):
    bad = tmp_path / "face_landmarker.task"
    data = au.MODEL_PATH.read_bytes()
    bad.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit flipped
    with pytest.raises(EmotionError, match="sha256 differs"):
        au.check_model(bad)
    with pytest.raises(EmotionError, match="missing"):
        au.check_model(tmp_path / "absent.task")


def test_the_table_uses_only_real_blendshape_names():
    assert {n for names in au.AU_TABLE.values() for n in names} <= set(au.BLENDSHAPES)


def test_the_table_is_the_documented_one():
    # Every AU of the docs page's table, and only those, with the blendshapes the page names.
    page = (ROOT / "docs" / "action_units.md").read_text()
    documented = {m[0]: tuple(n.strip() for n in m[1].split(","))
                  for m in re.findall(r"^\| (AU\d+) \| [^|]+ \| ([^|]+) \|", page, re.M)}
    assert documented == au.AU_TABLE
    assert set(au.AU_NAMES) == set(au.AU_TABLE)
    assert all(f"| {k} | {au.AU_NAMES[k]} |" in au.__doc__ for k in au.AU_TABLE)


def test_each_au_is_the_max_of_its_blendshapes_within_0_and_1():
    rng = np.random.default_rng(0)
    scores = {n: float(rng.uniform(0, 1)) for n in BLENDSHAPE_NAMES}
    got = au.action_units(scores)
    assert set(got) == set(au.AU_TABLE)
    assert got["AU4"] == max(scores["browDownLeft"], scores["browDownRight"])
    assert got["AU12"] == max(scores["mouthSmileLeft"], scores["mouthSmileRight"])
    assert got["AU28"] == max(scores["mouthRollLower"], scores["mouthRollUpper"])
    assert got["AU1"] == scores["browInnerUp"]
    # A one-sided action is kept whole (a mean would halve it); out-of-range scores are clipped.
    one_sided = {**dict.fromkeys(BLENDSHAPE_NAMES, 0.0), "mouthDimpleLeft": 0.8, "jawOpen": 1.2, "browInnerUp": -0.1}
    got = au.action_units(one_sided)
    assert got["AU14"] == 0.8 and got["AU26"] == 1.0 and got["AU1"] == 0.0
    assert all(0.0 <= v <= 1.0 for v in got.values())


def test_blendshapes_lacking_a_name_are_refused():
    with pytest.raises(EmotionError, match="browDownLeft"):
        au.action_units({n: 0.0 for n in BLENDSHAPE_NAMES if n != "browDownLeft"})


def test_the_smiling_astronaut_pulls_her_lip_corners_not_her_brows(reader, photo, detector):
    (face,) = detector.detect(Image.fromarray(photo))
    (got,) = reader.read(photo, [face])
    assert got.reason is None
    assert got.action_units["AU12"] >= 0.5 and got.action_units["AU4"] <= 0.3
    assert list(got.blendshapes) == BLENDSHAPE_NAMES and len(set(BLENDSHAPE_NAMES)) == 52
    assert all(0.0 <= v <= 1.0 for v in got.blendshapes.values())
    assert got.as_dict() == {"action_units": got.action_units, "blendshapes": got.blendshapes,
                             "action_units_reason": None}


def test_a_tiny_face_gets_none_with_a_reason(reader, photo):
    (got,) = reader.read(photo, [(200, 100, 10, 10)])
    assert got.action_units is None and got.blendshapes is None
    assert "too small" in got.reason and "24 px" in got.reason


def test_a_box_without_a_face_gets_none_with_a_reason(reader):
    gray = np.full((200, 200, 3), 128, dtype=np.uint8)
    (got,) = reader.read(gray, [(50, 50, 100, 100)])
    assert got.action_units is None and "no face" in got.reason


def test_a_box_outside_the_photo_is_clipped_not_allocated(reader, photo):
    far, huge = reader.read(photo, [(10**6, 10**6, 50, 50), (-10**9, -10**9, 2 * 10**9, 2 * 10**9)])
    assert far.action_units is None and "too small" in far.reason
    assert huge.reason is None or "no face" in huge.reason  # the whole photo, padded: no crash, no huge array


def test_each_face_of_a_group_gets_its_own_aus(reader, photo, detector):
    # The astronaut twice side by side, the right copy mirrored: one landmarker run per box, each its own face.
    pair = np.concatenate([photo, photo[:, ::-1]], axis=1)
    faces = detector.detect(Image.fromarray(pair))
    assert len(faces) == 2
    left, right = reader.read(pair, faces)
    assert left.action_units["AU12"] >= 0.5 and right.action_units["AU12"] >= 0.5
    # Mirroring swaps the person's sides: the left copy's left smile is the right copy's right smile.
    assert left.blendshapes["mouthSmileLeft"] == pytest.approx(right.blendshapes["mouthSmileRight"], abs=0.1)


def test_bad_images_and_boxes_are_refused_with_the_fix(reader, photo):
    with pytest.raises(EmotionError, match=r"uint8 array of shape \(H, W, 3\)"):
        reader.read(photo.astype(np.float32), [(0, 0, 10, 10)])
    with pytest.raises(EmotionError, match=r"\(x, y, w, h\)"):
        reader.read(photo, [("a", 0, 10, 10)])
    with pytest.raises(EmotionError, match=r"\(x, y, w, h\)"):
        reader.read(photo, [(float("nan"), 0, 10, 10)])
    assert reader.read(photo, []) == []


def test_threads_share_one_reader(reader, photo, detector):
    (face,) = detector.detect(Image.fromarray(photo))
    results, errors = [], []

    def work():
        try:
            results.append(reader.read(photo, [face])[0].action_units["AU12"])
        except Exception as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 6
    assert max(results) - min(results) < 1e-3  # the same crop gives the same reading on every landmarker
    assert len(reader._all) <= au.MAX_INSTANCES
