"""Following faces from frame to frame: each frame's boxes are matched to the open tracks (greedy, nearest first)
by their distance from where each track was heading, and each track's probabilities are smoothed.

Only boxes are used, no appearance; `bench/bench_tracker.py` measured this against plain IoU matching and against
norfair 2.3 on scenes with known tracks (see bench/README.md, "Tracking").
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from .records import FacePrediction

# A face continues a track when its centre is within this many face sides of where the track was heading (its last
# centre moved on at its velocity): at 5 fps a face walking 1-5 widths a second jumps 0.2-1 side between samples,
# which an IoU > 0.3 match lost. A track the detector missed (a dropout, or the face went behind another) is taken up
# again only nearer its expected place: a different face coming out from behind the same head is often within 1.5
# sides of it. Measured: bench/bench_tracker.py, bench/README.md "Tracking".
MAX_SHIFT = 1.5
REACQUIRE_SHIFT = 0.75
MAX_UNSEEN_S = 1.0  # seconds a track may go unseen (a blink, a turned head, a face passing behind another)
VELOCITY_GAIN = 0.5  # weight of the newest measured velocity in each track's (smoothed) velocity
EMA = 0.4  # weight of the newest frame in the smoothed probabilities (0.4: ~2 frames of memory)


@dataclass
class Track:
    id: int
    box: tuple[int, int, int, int]  # the last box the detector gave (what the rows report)
    probs: np.ndarray
    missed: int = 0  # updates since the last match
    first: float = 0.0
    last: float = 0.0
    frames: int = 0
    total: np.ndarray = field(default=None)  # sum of the smoothed probabilities, for the summary
    velocity: tuple[float, float] = (0.0, 0.0)  # of the box centre, px per second (smoothed)
    action_units: np.ndarray | None = None  # smoothed like the probabilities, from the frames that had them

    def smooth_action_units(self, values: dict[str, float], ema: float) -> dict[str, float]:
        """`values` (this frame's AUs) folded into the track's smoothed AUs; returns the smoothed ones."""
        new = np.fromiter(values.values(), float, len(values))
        self.action_units = new if self.action_units is None else ema * new + (1 - ema) * self.action_units
        return {au: float(v) for au, v in zip(values, self.action_units)}

    def centre_at(self, time: float) -> tuple[float, float]:
        """Where the box centre is expected at `time`: the last centre moved on at the track's velocity."""
        x, y, w, h = self.box
        dt = time - self.last
        return x + w / 2 + self.velocity[0] * dt, y + h / 2 + self.velocity[1] * dt


class FaceTracker:
    """Greedy matching of each frame's boxes to the open tracks by distance from where each track was heading
    (constant velocity); probabilities smoothed by an EMA per track. Without appearance: a face that leaves for
    longer than `max_unseen_s` comes back as a new track.

    Args:
        max_shift: the largest distance, in face sides, between a box's centre and a track's expected centre.
        reacquire_shift: the same for a track that the previous update did not see.
        max_unseen_s: seconds a track survives without a match (in time, so the same at any sampling rate).
        ema: weight of the newest probabilities (1 = no smoothing).
        velocity_gain: weight of the newest measured velocity (0 = no motion prediction).
        keep_closed: keep at most this many ended tracks (the newest) for `tracks()`; None = all (a video's
            summary needs them), 0 = none (the webcam: a session that runs for hours must not grow).
    """

    def __init__(self, max_shift: float = MAX_SHIFT, reacquire_shift: float = REACQUIRE_SHIFT,
                 max_unseen_s: float = MAX_UNSEEN_S, ema: float = EMA, velocity_gain: float = VELOCITY_GAIN,
                 keep_closed: int | None = None):
        self.max_shift, self.reacquire_shift, self.max_unseen_s = max_shift, reacquire_shift, max_unseen_s
        self.ema, self.gain, self.keep_closed = ema, velocity_gain, keep_closed
        self.open: list[Track] = []
        self.closed: list[Track] = []
        self._next = 1

    def update(self, time: float, boxes: list[tuple[int, int, int, int]], probs: np.ndarray) -> list[Track]:
        """Assigns this frame's boxes (and their probabilities) to tracks; returns the track of each, in the order
        given. `track` does this for predictions."""
        assigned: dict[int, Track] = {}
        used: set[int] = set()
        for _, i, j in sorted(self._candidates(time, boxes)):
            if i not in assigned and j not in used:
                assigned[i], _ = self.open[j], used.add(j)
        for i, box in enumerate(boxes):
            track = assigned.get(i)
            if track is None:
                track = Track(self._next, box, probs[i].copy(), first=time, last=time, total=np.zeros_like(probs[i]))
                self._next += 1
                self.open.append(track)
            else:
                self._moved(track, box, time)
                track.probs = self.ema * probs[i] + (1 - self.ema) * track.probs
            track.box, track.missed, track.last = box, 0, time
            track.frames += 1
            track.total += track.probs
            assigned[i] = track
        for track in self.open:
            if track.last != time:
                track.missed += 1
        self.closed += [t for t in self.open if time - t.last > self.max_unseen_s]
        if self.keep_closed is not None:
            self.closed = self.closed[-self.keep_closed:] if self.keep_closed else []
        self.open = [t for t in self.open if time - t.last <= self.max_unseen_s]
        return [assigned[i] for i in range(len(boxes))]

    def track(self, time: float, faces: list[FacePrediction],
              uncertain_below: float | None = None) -> list[FacePrediction]:
        """This frame's predictions followed along their tracks: each returned with its track id and its
        probabilities smoothed along the track (so its emotion and confidence follow the smoothed ones; its
        `uncertain` flag too, when `uncertain_below` is given). Action units, where read, are smoothed the same way
        (a frame without them leaves the track's as they were, and keeps its null and reason). Boxes, scores,
        keypoints and blendshapes stay this frame's."""
        probs = np.array([f.vector() for f in faces]) if faces else np.zeros((0, 0))
        tracks = self.update(time, [f.box for f in faces], probs)
        out = [f.with_probabilities(t.probs, t.id, uncertain_below) for f, t in zip(faces, tracks)]
        return [replace(f, action_units=t.smooth_action_units(f.action_units, self.ema))
                if f.action_units is not None else f for f, t in zip(out, tracks)]

    def _candidates(self, time: float, boxes) -> Iterator[tuple[float, int, int]]:
        """(distance in face sides, box, track) for every pair within the track's gate."""
        for j, track in enumerate(self.open):
            cx, cy = track.centre_at(time)
            side = max(1.0, (track.box[2] * track.box[3]) ** 0.5)
            gate = self.reacquire_shift if track.missed else self.max_shift
            for i, (x, y, w, h) in enumerate(boxes):
                d = ((x + w / 2 - cx) ** 2 + (y + h / 2 - cy) ** 2) ** 0.5 / side
                if d <= gate:
                    yield d, i, j

    def _moved(self, track: Track, box, time: float) -> None:
        """Updates the track's smoothed velocity from its last box to `box`."""
        dt = time - track.last
        if dt <= 0:
            return
        (x0, y0, w0, h0), (x, y, w, h) = track.box, box
        vx, vy = (x + w / 2 - x0 - w0 / 2) / dt, (y + h / 2 - y0 - h0 / 2) / dt
        track.velocity = (track.velocity[0] + self.gain * (vx - track.velocity[0]),
                          track.velocity[1] + self.gain * (vy - track.velocity[1]))

    def tracks(self) -> list[Track]:
        return sorted(self.closed + self.open, key=lambda t: t.id)


IouTracker = FaceTracker  # its name before motion prediction, for code written against it
