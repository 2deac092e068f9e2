"""How one-sided a face's mouth is, measured on Face Landmarker's 478 landmarks (issue #21: contempt).

The landmarks of one face are aligned onto a reference face by a similarity transform (rotation, scale, shift:
Procrustes) fitted on points that an expression hardly moves (nose, eye corners, forehead, cheekbones), so head
pose, size and position drop out. For each left/right pair of mouth points, the feature is how far the left point
lies from the mirror image of the right one, per axis (x: sideways, y: up, z: depth), in units of the distance
between the outer eye corners; for a point on the midline, how far it lies to either side. A symmetric mouth reads
0 on every feature, and a mirrored face gives the same features (its pairs swap).

Only asymmetry is measured, on purpose. The mean displacement of the mouth points from the reference face reads
more contempt on the wild contempt crops, but it also reads sharp photos as contempt: fitted without the posed
performers, it called 2.3-2.8% of their photos contempt where the asymmetry alone called 0.6-1.0%, the same as when
it had seen them (docs/research/transfer.md, "Mouth asymmetry from the landmarks").
"""
from __future__ import annotations

import numpy as np

# The reference face's rigid points (MediaPipe face mesh indices): the mean aligned shape of 4,836 FER+ training faces
# read at 256 px, made symmetric about its midline (x = 0) and scaled so that the outer eye corners (33, 263) lie 1
# apart. Image axes: x to the right of the picture, y down, z away from the camera.
REFERENCE = {
    1: (0.0, 0.3855, -0.4228), 4: (0.0, 0.3211, -0.4512), 5: (0.0, 0.2348, -0.4297), 6: (0.0, 0.0122, -0.2717),
    168: (0.0, -0.0801, -0.2298), 197: (0.0, 0.0905, -0.3214), 195: (0.0, 0.1604, -0.3751),
    10: (0.0, -0.5979, -0.2144), 151: (0.0, -0.4333, -0.2423), 9: (0.0, -0.2657, -0.2577), 8: (0.0, -0.1747, -0.2380),
    33: (-0.5000, -0.0570, 0.0098), 263: (0.5000, -0.0570, 0.0098), 133: (-0.2019, -0.0363, -0.0481),
    362: (0.2019, -0.0363, -0.0481), 234: (-0.7629, 0.0862, 0.6025), 454: (0.7629, 0.0862, 0.6025),
    127: (-0.7684, -0.0637, 0.5425), 356: (0.7684, -0.0637, 0.5425), 93: (-0.7534, 0.2445, 0.6205),
    323: (0.7534, 0.2445, 0.6205),
}
# Mouth points, left/right pairs of the face mesh: the lips' outer and inner contours and the skin beside the corners.
MOUTH_PAIRS = (
    (61, 291), (146, 375), (91, 321), (181, 405), (84, 314), (37, 267), (39, 269), (40, 270), (185, 409),
    (78, 308), (95, 324), (88, 318), (178, 402), (87, 317), (82, 312), (81, 311), (80, 310), (191, 415),
    (57, 287), (43, 273), (106, 335), (204, 424), (214, 434), (212, 432), (202, 422), (186, 410), (92, 322),
)
MOUTH_MIDLINE = (17, 0, 14, 13)  # lower lip, upper lip (outer), lower lip, upper lip (inner)
N_LANDMARKS = 478
GEOMETRY = tuple(f"lm{i}_{j}_{axis}" for i, j in MOUTH_PAIRS for axis in "xyz") + tuple(
    f"lm{i}_x" for i in MOUTH_MIDLINE)
_RIGID = np.array(list(REFERENCE))
_REF = np.array(list(REFERENCE.values()))
_LEFT = np.array([i for i, _ in MOUTH_PAIRS])
_RIGHT = np.array([j for _, j in MOUTH_PAIRS])
_MID = np.array(MOUTH_MIDLINE)


def align(landmarks: np.ndarray) -> np.ndarray:
    """`landmarks` (478, 3) moved onto the reference face by the similarity transform that best fits its rigid
    points (least squares, no reflection)."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (N_LANDMARKS, 3) or not np.isfinite(points).all():
        raise ValueError(f"landmarks must be a finite ({N_LANDMARKS}, 3) array, not shape {points.shape}")
    a = points[_RIGID]
    a_mean, b_mean = a.mean(0), _REF.mean(0)
    a0, b0 = a - a_mean, _REF - b_mean
    u, s, vt = np.linalg.svd(a0.T @ b0)
    d = np.ones(3)
    d[2] = np.sign(np.linalg.det(u @ vt)) or 1.0
    rotation = u @ np.diag(d) @ vt
    spread = (a0 ** 2).sum()
    if spread == 0:
        raise ValueError("landmarks have no extent: every rigid point is at the same place")
    scale = (s * d).sum() / spread
    return (points - a_mean) @ rotation * scale + b_mean


def asymmetry(landmarks: np.ndarray) -> dict[str, float]:
    """The GEOMETRY features of one face's landmarks: |left point - mirrored right point| per axis for each pair of
    MOUTH_PAIRS, and |x| for each point of MOUTH_MIDLINE, in outer-eye-corner distances."""
    aligned = align(landmarks)
    pairs = np.abs(aligned[_LEFT] - aligned[_RIGHT] * np.array([-1.0, 1.0, 1.0]))
    values = np.concatenate([pairs.ravel(), np.abs(aligned[_MID, 0])])
    return dict(zip(GEOMETRY, values.tolist()))
