"""Videos: decode (PyAV), sample frames, detect and classify in batches, follow each face along a track, and smooth
its probabilities along the track.

The result is one row per face per sampled frame (time, track id, box, the 8 smoothed probabilities, top emotion)
and one summary per track, both written by `emotion.records` from the tracked `FacePrediction`s. Frames are
decoded one at a time and dropped once their faces are cropped, so memory stays flat however long the video is;
only the rows (a few hundred bytes per face and frame) accumulate, and `iter_video` yields them as they come for
callers that write them out instead.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .errors import EmotionError, ImageTooLargeError, UnsupportedImageError
from .records import track_summary, video_columns, video_row
from .tracking import FaceTracker, IouTracker, Track  # noqa: F401  (re-exported: callers import them from here)

log = logging.getLogger(__name__)

BATCH_FRAMES = 8  # sampled frames whose faces are classified in one forward pass
# The photo's search (emotion/faces.py: YuNet's passes, a BlazeFace view per face; ~30-45 ms on a 720p frame here)
# runs on the first sampled frame and then once per FULL_SEARCH_SECONDS of video; the frames between reuse the
# previous frame's faces (`FaceDetector.follow`: YuNet's near pass for a new near face, and one batch of views
# around the faces already there; ~5 ms), so a new small face is found within a second. The tracker links the
# faces from frame to frame (emotion/tracking.py).
FULL_SEARCH_SECONDS = 1.0


class VideoError(UnsupportedImageError):
    """The file is not a video we can decode (status 415, like an unreadable image)."""


def open_video(path: str | Path):
    """The PyAV container and its first video stream; a clear error for anything that is not a readable video."""
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise VideoError(f"not a video we can read ({type(e).__name__}): send an MP4, WebM, MOV, AVI or MKV "
                         "file") from None
    still = container.format.name.endswith("_pipe") or container.format.name in ("image2", "gif")
    if still or not container.streams.video:
        container.close()
        what = "a still image (predict it as a photo)" if still else "a file without a video stream"
        raise VideoError(f"this is {what}: send a video file (MP4, WebM, MOV, AVI, MKV)")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame-parallel decoding where the codec allows it
    return container, stream


def frame_image(frame) -> Any:
    """A decoded PyAV frame as an RGB PIL image, converted on one thread.

    PyAV keeps the converter on the frame, with a pool of threads by default. A frame freed in a forked child (a
    frame still held by an exception's traceback until the garbage collector runs, and the collector running in a
    child that Ray or multiprocessing forked) then waits forever on that pool, which the child does not have: a
    full test run hung so. One thread converts a 720p frame in about a millisecond and leaves nothing to wait on."""
    return frame.to_image(threads=1)


def close_video(container, owner: int) -> None:
    """Closes `container` in the process that opened it (`owner`, its pid). A generator over a video's frames left
    suspended before a fork (Ray, multiprocessing) is closed in the child when the child's garbage collector gets to
    it, and closing its decoder there waits forever on FFmpeg's frame threads, which the child does not have (seen:
    the child hung). In a child the container is kept instead, never freed: its memory is the parent's copy anyway."""
    if os.getpid() == owner:
        container.close()
    else:
        _KEPT_IN_CHILD.append(container)


_KEPT_IN_CHILD: list = []  # containers a forked child must never free (`close_video`)


def duration_s(container, stream) -> float | None:
    """The video's duration in seconds from its header, or None when the header does not say."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def sampled_frames(path: str | Path, every: int | None = None, fps: float | None = None,
                   max_seconds: float | None = None) -> Iterator[tuple[int, float, Any]]:
    """(frame index, time in seconds, PIL image) for every `every`-th frame, or about `fps` frames per second.

    A frame later than `max_seconds` raises ImageTooLargeError (a header can understate the duration)."""
    import av

    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        raise EmotionError(f"every must be a whole number >= 1, not {every!r}: 1 takes every frame, 5 every fifth")
    if fps is not None and not (isinstance(fps, (int, float)) and 0 < fps <= 120):
        raise EmotionError(f"fps must be between 0 and 120, not {fps!r}: 5 samples five frames per second")
    container, stream = open_video(path)
    owner = os.getpid()
    next_time, decoded = 0.0, 0
    try:
        for index, frame in enumerate(container.decode(stream)):
            decoded += 1
            time = float(frame.time) if frame.time is not None else index / float(stream.average_rate or 25)
            if max_seconds is not None and time > max_seconds:
                raise ImageTooLargeError(f"the video runs past the limit of {max_seconds:.0f} s: cut it or send a "
                                         "shorter clip")
            if fps is not None:
                if time + 1e-6 < next_time:
                    continue
                next_time = max(next_time + 1 / fps, time)  # no catch-up bursts after a gap
            elif index % (every or 1):
                continue
            yield index, time, frame_image(frame)
        if not decoded:
            raise VideoError("the video has no frames we can decode: re-encode or re-export it")
    except av.error.FFmpegError as e:
        raise VideoError(f"the video is damaged or truncated ({type(e).__name__}: {e}): re-encode or re-export "
                         "it") from None
    finally:
        close_video(container, owner)


def frames_at(path: str | Path, indices: Iterable[int]) -> Iterator[tuple[int, Any]]:
    """(index, PIL image) for the frames at these indices (numbered as `sampled_frames` numbers them), in order;
    decodes no further than the last one, and converts only those (one image alive at a time if the caller
    drops each)."""
    import av

    wanted = set(indices)
    if not wanted:
        return
    last = max(wanted)
    container, stream = open_video(path)
    owner = os.getpid()
    try:
        for index, frame in enumerate(container.decode(stream)):
            if index in wanted:
                yield index, frame_image(frame)
            if index >= last:
                break
    except av.error.FFmpegError as e:
        raise VideoError(f"the video is damaged or truncated ({type(e).__name__}: {e}): re-encode or re-export "
                         "it") from None
    finally:
        close_video(container, owner)


@dataclass
class VideoPrediction:
    """`rows`: one per face per sampled frame; `tracks`: one summary per track; `interrupted`: Ctrl-C stopped it."""

    rows: list[dict[str, Any]]
    tracks: list[dict[str, Any]]
    labels: list[str]
    frames: int = 0
    interrupted: bool = False
    action_units: bool = False  # the rows have the AU columns (au_1, ..., action_units_reason)

    def to_dict(self) -> dict[str, Any]:
        return {"frames_analysed": self.frames, "interrupted": self.interrupted, "labels": self.labels,
                "tracks": self.tracks, "rows": self.rows}

    def to_pandas(self):
        """The per-frame table as a DataFrame: time_s, frame, track, x, y, w, h, emotion, the 8 probabilities."""
        import pandas as pd

        return pd.DataFrame(self.rows, columns=video_columns(self.labels, self.action_units))


def iter_video(predictor, path: str | Path, every: int | None = None, fps: float | None = None,
               tracker: FaceTracker | None = None, max_seconds: float | None = None, action_units: bool = False,
               **detect_options) -> Iterator[dict[str, Any] | int]:
    """The rows of `predict_video` as they are made, in time order; an int is yielded after each sampled frame
    (the number of frames done), for progress. Stops cleanly when the caller stops iterating.

    With `action_units`, each face's AUs are read on its frame before the frame is dropped, and smoothed along
    its track by the tracker as the probabilities are."""
    tracker = tracker or FaceTracker()
    # sampled frames waiting for classification: (index, time, faces, their action units or None)
    pending: list[tuple[int, float, list, list | None]] = []
    crops: list = []
    done = 0

    def flush():
        predictions = predictor.classify(crops, [f for _, _, faces, _ in pending for f in faces])
        k, rows = 0, []
        for index, time, faces, aus in pending:
            found = predictions[k:k + len(faces)]
            if aus is not None:
                found = [p.with_action_units(a) for p, a in zip(found, aus)]
            tracked = tracker.track(time, found)
            k += len(faces)
            rows += [video_row(time, index, face) for face in tracked]
        pending.clear()
        crops.clear()
        return rows

    searched, faces = None, []
    for index, time, image in sampled_frames(path, every, fps, max_seconds):
        if searched is None or time - searched >= FULL_SEARCH_SECONDS - 1e-6:
            faces, searched = predictor.detector.detect(image, **detect_options), time
        else:
            faces = predictor.detector.follow(image, [f.box for f in faces], **detect_options).faces
        crops += predictor.crops(image, faces)  # the frame itself is dropped: only its faces' crops wait
        pending.append((index, time, faces, predictor.read_action_units(image, faces) if action_units else None))
        done += 1
        if len(pending) >= BATCH_FRAMES:
            yield from flush()
        yield done
    yield from flush()


def predict_video(predictor, path: str | Path, every: int | None = None, fps: float | None = None,
                  progress: bool = True, max_seconds: float | None = None,
                  on_frame: Callable[[int], None] | None = None, action_units: bool = False,
                  **detect_options) -> VideoPrediction:
    """Every face in a video, tracked and smoothed: see the module docstring. Ctrl-C returns what is done.

    `on_frame(n)` is called after each sampled frame with the number done so far (a UI's progress bar);
    `action_units` adds each face's AUs, smoothed along its track, to the rows (`iter_video`)."""
    tracker = FaceTracker()
    rows, frames, interrupted = [], 0, False
    bar = _progress(path, every, fps, progress)
    try:
        for item in iter_video(predictor, path, every, fps, tracker, max_seconds, action_units, **detect_options):
            if isinstance(item, int):
                frames = item
                if bar is not None:
                    bar.update(1)
                if on_frame is not None:
                    on_frame(frames)
            else:
                rows.append(item)
    except KeyboardInterrupt:
        interrupted = True
        log.warning("interrupted after %d sampled frames: returning what is done", frames)
    finally:
        if bar is not None:
            bar.close()
    return VideoPrediction(rows, [track_summary(t, predictor.labels) for t in tracker.tracks()], predictor.labels,
                           frames, interrupted, action_units)


def _progress(path, every, fps, show: bool):
    """A progress bar (or plain lines, off a terminal) over the sampled frames (its total from the header, when it says), or None.

    Opens the video first either way, so a file that is not a video fails before any bar is drawn."""
    container, stream = open_video(path)
    seconds, rate = duration_s(container, stream), float(stream.average_rate or 0)
    container.close()
    if not show:
        return None
    from .progress import progress

    total = None
    if seconds and rate:
        total = round(seconds * fps) if fps else round(seconds * rate / (every or 1))
    return progress(total=total, desc=f"analysing {Path(path).name}", unit="frame")
