"""The mouth's asymmetry on the landmarks (emotion/face_geometry.py): blind to pose, size, position and mirroring,
zero on a symmetric mouth, and a lip corner that moves shows in its own pair only."""
from __future__ import annotations

import numpy as np
import pytest

from emotion.face_geometry import GEOMETRY, MOUTH_MIDLINE, MOUTH_PAIRS, N_LANDMARKS, REFERENCE, align, asymmetry

MIRROR = np.array([-1.0, 1.0, 1.0])
RIGID_PAIRS = [(i, j) for i in REFERENCE for j in REFERENCE if i < j and REFERENCE[i][0] == -REFERENCE[j][0] != 0]


def symmetric_face(rng) -> np.ndarray:
    """The reference face's rigid points and a random mouth that is its own mirror image (other points random)."""
    face = rng.normal(0, 0.5, (N_LANDMARKS, 3))
    for i, point in REFERENCE.items():
        face[i] = point
    for i, j in MOUTH_PAIRS:
        face[j] = face[i] * MIRROR
    face[list(MOUTH_MIDLINE), 0] = 0.0
    return face


def moved(face: np.ndarray, rng) -> np.ndarray:
    """`face` turned, scaled and shifted at random, as another head pose, face size and crop would show it."""
    a, b, c = np.radians(rng.uniform(-40, 40, 3))
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    rotation = rx @ ry @ rz
    return face @ rotation.T * rng.uniform(0.1, 3.0) + rng.normal(0, 1, 3)


def mirror_image(face: np.ndarray) -> np.ndarray:
    """The same face in a mirrored photo: x flipped, and each left/right point taking its partner's place."""
    out = face * MIRROR
    for i, j in RIGID_PAIRS + list(MOUTH_PAIRS):
        out[[i, j]] = out[[j, i]]
    return out


def test_the_reference_is_symmetric_and_its_pairs_are_the_meshs():
    assert len(RIGID_PAIRS) == 5  # eye corners (outer, inner), cheekbones at three heights
    assert all(REFERENCE[i][1:] == REFERENCE[j][1:] for i, j in RIGID_PAIRS)
    assert all(x == 0 for i, (x, _, _) in REFERENCE.items() if not any(i in p for p in RIGID_PAIRS))
    assert len(GEOMETRY) == 3 * len(MOUTH_PAIRS) + len(MOUTH_MIDLINE) == len(set(GEOMETRY))


def test_a_symmetric_mouth_reads_zero_whatever_the_pose_size_and_place():
    rng = np.random.default_rng(0)
    for _ in range(5):
        got = asymmetry(moved(symmetric_face(rng), rng))
        assert max(abs(v) for v in got.values()) < 1e-9


def test_features_ignore_pose_size_and_place_and_mirroring():
    rng = np.random.default_rng(1)
    face = rng.normal(0, 0.5, (N_LANDMARKS, 3))
    want = np.array(list(asymmetry(face).values()))
    assert want.max() > 0.05  # a random face is far from symmetric
    for _ in range(3):
        np.testing.assert_allclose(list(asymmetry(moved(face, rng)).values()), want, atol=1e-9)
    np.testing.assert_allclose(list(asymmetry(mirror_image(face)).values()), want, atol=1e-9)


def test_a_lip_corner_raised_on_one_side_shows_in_its_own_pair_only():
    rng = np.random.default_rng(2)
    face = symmetric_face(rng)
    face[61, 1] -= 0.05  # one mouth corner 0.05 eye-corner distances up (y points down)
    got = asymmetry(moved(face, rng))
    assert got["lm61_291_y"] == pytest.approx(0.05, abs=1e-9)
    assert max(abs(v) for k, v in got.items() if k != "lm61_291_y") < 1e-9
    np.testing.assert_allclose(align(face)[61], face[61], atol=1e-9)  # rigid points untouched: no move


@pytest.mark.parametrize("bad", [np.zeros((68, 3)), np.full((N_LANDMARKS, 3), np.nan), np.zeros((N_LANDMARKS, 3))])
def test_landmarks_that_are_not_a_face_are_refused(bad):
    with pytest.raises(ValueError, match="landmarks"):
        asymmetry(bad)
