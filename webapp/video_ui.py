"""The Video tab: upload a clip -> a timeline of each face's emotions, annotated key frames, a table per face and the
whole per-frame table as CSV.

The event is the named endpoint `predict_video` (what `gradio_client` calls). It takes the same options and runs
the same checks as `POST /api/predict_video` (`video.run_video`: duration limit, one video at a time) on the same
bounded inference pool, and takes videos as large as it does (the page's upload limit is the largest file any tab
takes); the upload is read only through `files.copy_upload` (an upload of this server, size-checked), a chunk at a
time into a private temp file that FFmpeg then reads.
"""
from __future__ import annotations

import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import gradio as gr
import pandas as pd
from gradio.utils import get_upload_folder

from emotion import EmotionError, ImageTooLargeError
from emotion.video import VideoPrediction, frames_at

from . import au_ui, render, video
from .files import copy_upload
from .models import ModelRegistry
from .service import OptionsError, megabytes
from .settings import current

SAMPLING = [("N frames per second", "fps"), ("every Nth frame", "every")]
PLOT_TRACKS = 8  # faces drawn on the timeline and as key frames (the longest-seen); the table and CSV have all
PLOT_EMOTIONS = 2  # each face's most likely emotions (over its whole track) drawn on the timeline
PLOT_POINTS = 600  # per line at most: a 2-minute clip at 30 fps is thinned to 5 points a second
SUMMARY_LINES = 12
CSV_NAME = "video_emotions.csv"
SEND_A_VIDEO = 'upload the video (gradio_client: handle_file("clip.mp4")); server paths are not accepted'


@contextmanager
def video_upload(payload: Any) -> Iterator[str]:
    """An un-preprocessed gr.Video value -> the path of a private copy of a video this server received (deleted
    afterwards); anything else is refused."""
    if payload is None:
        raise EmotionError("no video: upload a clip (MP4, WebM, MOV, AVI or MKV) first")
    if not isinstance(payload, dict) or not payload.get("path"):
        raise EmotionError(f"the video must be an uploaded file: {SEND_A_VIDEO}")
    with tempfile.NamedTemporaryFile(suffix=".video") as tmp:
        try:
            size = copy_upload(payload["path"], tmp, current().max_video_bytes)  # the REST route's limit
        except ImageTooLargeError:
            raise video.too_large() from None
        if not size:
            raise EmotionError("the uploaded video is empty (0 bytes): upload the clip again")
        tmp.flush()
        yield tmp.name


def parse_video_options(model: Any, sampling: Any, rate: Any, max_faces: Any, min_score: Any,
                        action_units: Any = False) -> video.VideoOptions:
    """The tab's controls -> the REST route's validated options (same bounds, same messages)."""
    if sampling not in {value for _, value in SAMPLING}:
        raise OptionsError(f"sampling must be 'fps' (N frames per second) or 'every' (every Nth frame), not "
                           f"{sampling!r}")
    return video.video_options({"model": model, sampling: rate, "max_faces": max_faces,
                                "min_detection_score": min_score, "action_units": action_units})


def timeline(result: VideoPrediction) -> pd.DataFrame:
    """Long format for gr.LinePlot: time_s, probability, face ("Face 2: happy"); each of the longest-seen faces'
    PLOT_EMOTIONS most likely emotions (averaged over its track), and with action units its strongest AUs
    ("Face 2: AU12", `au_ui.timeline_lines`), thinned to PLOT_POINTS points per line."""
    table = result.to_pandas()
    parts = []
    for track in shown_tracks(result):
        rows = table[table.track == track["track"]]
        rows = rows.iloc[::-(-len(rows) // PLOT_POINTS)]  # every k-th row, k = ceil(len / PLOT_POINTS)
        means = track["mean_probabilities"]
        for emotion in sorted(means, key=means.get, reverse=True)[:PLOT_EMOTIONS]:
            parts.append(pd.DataFrame({"time_s": rows.time_s, "probability": rows[emotion],
                                       "face": f"Face {track['track']}: {emotion}"}))
        if result.action_units:
            parts += au_ui.timeline_lines(table, track["track"], rows)
    if not parts:
        return pd.DataFrame({"time_s": pd.Series(dtype=float), "probability": pd.Series(dtype=float),
                             "face": pd.Series(dtype=str)})
    return pd.concat(parts, ignore_index=True)


def shown_tracks(result: VideoPrediction) -> list[dict[str, Any]]:
    """The PLOT_TRACKS tracks seen in the most frames, in id order."""
    longest = sorted(result.tracks, key=lambda t: (-t["frames"], t["track"]))[:PLOT_TRACKS]
    return sorted(longest, key=lambda t: t["track"])


def tracks_table(result: VideoPrediction) -> pd.DataFrame:
    """One row per face (track): when it was seen, its most likely emotion and its mean probabilities."""
    rows = [{"face": t["track"], "from_s": t["first_s"], "to_s": t["last_s"], "frames": t["frames"],
             "mostly": t["emotion"], **{lab: round(p, 2) for lab, p in t["mean_probabilities"].items()}}
            for t in result.tracks]
    return pd.DataFrame(rows, columns=["face", "from_s", "to_s", "frames", "mostly", *result.labels])


def key_frames(path: str, result: VideoPrediction, uncertain_below: float) -> list[tuple[Any, str]]:
    """(annotated frame, caption) for the frame where each shown face is most confident; every face in that frame
    is boxed and numbered by its track, as in the table."""
    best: dict[int, list[dict[str, Any]]] = {}  # frame index -> the tracks most confident there
    for track in shown_tracks(result):
        rows = [r for r in result.rows if r["track"] == track["track"]]
        top = max(rows, key=lambda r: r["confidence"])
        best.setdefault(top["frame"], []).append(top)
    gallery = []
    for index, image in frames_at(path, best):  # one decoded frame at a time, each shrunk at once
        faces = [{"box": {k: r[k] for k in "xywh"}, "emotion": r["emotion"], "confidence": r["confidence"],
                  "uncertain": r["confidence"] < uncertain_below, "number": r["track"]}
                 for r in result.rows if r["frame"] == index]
        stars = ", ".join(f"Face {r['track']}" for r in best[index])
        gallery.append((render.preview(image, faces), f"{stars} most confident, at {best[index][0]['time_s']:.2f} s"))
    return gallery


def write_csv(result: VideoPrediction) -> str:
    """The per-frame table in a new folder of Gradio's cache, which Gradio deletes on its schedule (DELETE_CACHE)
    like every other output; the name is ours, never the caller's."""
    folder = Path(tempfile.mkdtemp(prefix="video-", dir=get_upload_folder()))
    path = folder / CSV_NAME
    result.to_pandas().to_csv(path, index=False)
    return str(path)


def summary(result: VideoPrediction, model_id: str, seconds: float) -> str:
    """Markdown: how many faces were followed, and each one's span and most likely emotion."""
    tracks = result.tracks
    if not tracks:
        return (f"**No face found** in {result.frames} sampled frames. Try a lower *Min detection score*, sample "
                "more frames, or a clip where faces are larger and more frontal.")
    lines = [f"**{len(tracks)} face{'s' if len(tracks) != 1 else ''}** followed through {result.frames} sampled "
             f"frames ({model_id}, {seconds:.1f} s)."]
    if len(tracks) > PLOT_TRACKS:
        lines[0] += (f" The timeline and key frames show the {PLOT_TRACKS} seen longest; the table and the CSV "
                     "have every face.")
    for t in tracks[:SUMMARY_LINES]:
        share = t["mean_probabilities"][t["emotion"]]
        lines.append(f"- Face {t['track']}: {t['first_s']:.1f}-{t['last_s']:.1f} s, mostly **{t['emotion']}** "
                     f"({share:.0%} on average)")
    if len(tracks) > SUMMARY_LINES:
        lines.append(f"- … {len(tracks) - SUMMARY_LINES} more in the table")
    return "\n".join(lines)


def progress_reporter(progress: Any) -> Callable[[int, int | None], None]:
    """on_frame for `video.run_video`: updates the page's progress bar at most 5 times a second."""
    last = [0.0]

    def report(done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.2:
            last[0] = now
            progress((done, max(total or 0, done) or None), desc="Analysing sampled frames", unit="frames")

    return report


def analyse_upload(registry: ModelRegistry, payload: Any, options: video.VideoOptions, progress: Any) -> tuple:
    """The tab's outputs for one upload: summary, timeline, key frames, table per face, CSV path."""
    t0 = time.perf_counter()
    with video_upload(payload) as path:
        key, result = video.run_video(registry, path, options, progress_reporter(progress))
        progress(None, desc="Drawing the key frames")
        threshold = registry.uncertain_threshold(key)
        frames = key_frames(path, result, threshold)
    text = summary(result, key, time.perf_counter() - t0)
    return text, timeline(result), frames, tracks_table(result), write_csv(result)


def build_video_tab(registry: ModelRegistry, bounded: Callable, model: gr.Dropdown, max_faces: gr.Slider,
                    min_score: gr.Slider) -> None:
    """The Video tab (inside build_ui's gr.Tabs) and its event; `bounded` runs a handler on the inference pool."""

    @bounded
    def analyse(video_, model_, sampling, rate, max_faces_, min_score_, action_units_, progress):
        options = parse_video_options(model_, sampling, rate, max_faces_, min_score_, action_units_)
        return analyse_upload(registry, video_, options, progress)

    def predict_video(video, model, sampling, rate, max_faces, min_detection_score, action_units=False,
                      progress=gr.Progress()):
        """Every face in the video, followed along tracks: a summary, a timeline of each face's most likely
        emotions (with `action_units`, its strongest action units too, and au_ columns in the CSV), the frame
        where each face is most confident, a table per face and the per-frame CSV."""
        if not registry.is_loaded(model or None):
            progress(0, desc="Loading the model (first request only)…")
        return analyse(video, model, sampling, rate, max_faces, min_detection_score, action_units, progress)

    with gr.Tab("Video", id="video"):
        limits = current()
        gr.Markdown(f"Each sampled frame is analysed and every face is followed from frame to frame (Face 1, Face "
                    f"2, …), its probabilities smoothed along the way. Clips up to {megabytes(limits.max_video_bytes)} "
                    f"and {limits.max_video_seconds:.0f} s; one video is analysed at a time.")
        with gr.Row():
            with gr.Column():
                clip = gr.Video(sources=["upload"], label="Video", height=360, elem_id="video")
                with gr.Row():
                    sampling = gr.Radio(SAMPLING, value="fps", label="Sample", scale=2)
                    rate = gr.Number(video.DEFAULT_FPS, label="N", minimum=0.1, maximum=1000, scale=1,
                                     info="fps: up to 30; every: 1 to 1000")
                au_box = au_ui.video_option()
                run = gr.Button("Analyse the video", variant="primary")
            with gr.Column():
                status = gr.Markdown("Upload a video, then press *Analyse the video*.", label="Summary",
                                     elem_id="video-summary")
                plot = gr.LinePlot(x="time_s", y="probability", color="face", x_title="time (s)",
                                   y_title="probability", y_lim=[0, 1], tooltip="all",
                                   label="Each face's most likely emotions over time (with Action units: its "
                                   "strongest AUs, 0..1)", show_label=True)
        gallery = gr.Gallery(label="Key frames: where each face is most confident", columns=4, height="auto",
                             object_fit="contain", preview=False, format="jpeg", interactive=False)
        table = gr.Dataframe(label="Per face (mean probabilities over the track)", interactive=False, wrap=True)
        csv = gr.File(label="Every face in every sampled frame (CSV)", interactive=False)
    # preprocess=False: the handler reads the upload itself (files.read_upload), never a path Gradio passes on.
    run.click(predict_video, [clip, model, sampling, rate, max_faces, min_score, au_box],
              [status, plot, gallery, table, csv],
              api_name="predict_video", preprocess=False, concurrency_limit=1, concurrency_id="video")
