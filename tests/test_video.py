"""Videos: faces followed along tracks with stable ids and the right time stamps; bad files are clear errors."""
from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from emotion import Predictor
from emotion.video import FaceTracker, VideoError, sampled_frames

from conftest import ASTRONAUT_FACE, set_settings

FPS = 10


def write_clip(path: Path, frames: list[Image.Image], fps: int = FPS) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames[0].width, frames[0].height, "yuv420p"
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_image(image)))
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """3 s at 10 fps, 480x320: face A walks right for 2 s then is gone; face B enters at 1 s and stays."""
    x, y, w, h = ASTRONAUT_FACE
    head = Image.fromarray(data.astronaut()).crop((x - 30, y - 40, x + w + 30, y + h + 20))
    frames = []
    for i in range(3 * FPS):
        canvas = Image.new("RGB", (480, 320), (110, 120, 130))
        if i < 2 * FPS:
            canvas.paste(head, (10 + 4 * i, 20))  # A moves 4 px a frame
        if i >= FPS:
            canvas.paste(head, (300, 150))
        frames.append(canvas)
    return write_clip(tmp_path_factory.mktemp("video") / "clip.mp4", frames)


@pytest.fixture(scope="module")
def predictor(tiny_model) -> Predictor:
    return Predictor.from_pretrained(f"local-dir:{tiny_model}")


def test_two_faces_give_two_tracks_with_stable_ids_and_times(predictor, clip):
    result = predictor.predict_video(clip, progress=False)
    assert result.frames == 30 and not result.interrupted
    assert [t["track"] for t in result.tracks] == [1, 2]
    a, b = result.tracks
    assert a["first_s"] == pytest.approx(0.0) and a["last_s"] == pytest.approx(1.9) and a["frames"] == 20
    assert b["first_s"] == pytest.approx(1.0) and b["last_s"] == pytest.approx(2.9) and b["frames"] == 20
    rows = result.rows
    assert len(rows) == 40
    assert {r["track"] for r in rows if r["x"] < 200} == {1} and {r["track"] for r in rows if r["x"] > 250} == {2}
    times = sorted({r["time_s"] for r in rows})
    assert times == pytest.approx([i / FPS for i in range(30)])
    for r in rows:
        assert sum(r[lab] for lab in predictor.labels) == pytest.approx(1.0, abs=1e-3)
        assert r["emotion"] == max(predictor.labels, key=lambda lab: r[lab])


def test_a_full_search_runs_once_a_second_and_the_frames_between_follow_the_faces(predictor, clip, monkeypatch):
    det, searched, followed = predictor.detector, [], []
    find, follow = det.find, det.follow
    monkeypatch.setattr(det, "find", lambda image, *a, **k: searched.append(1) or find(image, *a, **k))
    monkeypatch.setattr(det, "follow", lambda image, boxes, *a, **k: followed.append(len(boxes)) or
                        follow(image, boxes, *a, **k))
    det.passes.clear()
    result = predictor.predict_video(clip, progress=False)  # 30 frames at 10 fps
    assert len(searched) == 3 and len(followed) == 27  # full searches at 0, 1 and 2 s
    # the near pass on every frame; the whole-frame pass at most in full searches (a portrait-like frame stops)
    assert det.passes["near"] == 30 and det.passes["photo"] <= 3
    assert [t["frames"] for t in result.tracks] == [20, 20]


def test_a_new_near_face_is_found_between_full_searches(predictor, tmp_path):
    """A face that comes in at 1.5 s (between the full searches at 1 and 2 s) gets its track at once."""
    x, y, w, h = ASTRONAUT_FACE
    head = Image.fromarray(data.astronaut()).crop((x - 30, y - 40, x + w + 30, y + h + 20))
    frames = []
    for i in range(25):
        canvas = Image.new("RGB", (480, 320), (110, 120, 130))
        canvas.paste(head, (10, 20))
        if i >= 15:
            canvas.paste(head, (300, 150))
        frames.append(canvas)
    tracks = predictor.predict_video(write_clip(tmp_path / "enters.mp4", frames), progress=False).tracks
    assert [t["first_s"] for t in tracks] == pytest.approx([0.0, 1.5])


def test_following_finds_moved_small_faces_around_their_last_boxes(predictor):
    """Faces too small for the near pass keep their tracks between full searches: looked for around their boxes."""
    det = predictor.detector
    x, y, w, h = ASTRONAUT_FACE
    head = Image.fromarray(data.astronaut()).crop((x - 38, y - 50, x + w + 38, y + h + 26)).resize((72, 72))
    frame = Image.new("RGB", (1280, 720), (128, 128, 128))
    for i in range(3):
        frame.paste(head, (200 + 400 * i, 300))  # faces ~40 px: 3% of the frame
    found = det.find(frame)
    moved = Image.new("RGB", frame.size, (128, 128, 128))
    moved.paste(frame, (6, 4))  # the next frame: everyone moved a little
    det.passes.clear()
    followed = det.follow(moved, [f.box for f in found.faces])
    assert len(found.faces) == len(followed.faces) == 3 and "photo" not in det.passes
    for before, after in zip(found.faces, followed.faces):
        assert after.box[0] - before.box[0] == pytest.approx(6, abs=3)
        # the same calibrated score, within how much BlazeFace's score moves when its view is framed on the last
        # box rather than on YuNet's candidate (measured: 0.79-0.94 for these 40 px faces)
        assert after.score == pytest.approx(before.score, abs=0.2) and after.score > 0.5
    assert det.follow(moved, []).faces == []  # without the previous boxes: too small for the near pass


def test_sampling_every_nth_frame_and_by_fps(clip):
    assert [i for i, _, _ in sampled_frames(clip, every=10)] == [0, 10, 20]
    assert [round(t, 2) for _, t, _ in sampled_frames(clip, fps=2)] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]


def test_probabilities_are_smoothed_along_a_track():
    tracker = FaceTracker(ema=0.5)
    first = tracker.update(0.0, [(0, 0, 10, 10)], np.array([[1.0, 0.0]]))[0]
    again = tracker.update(0.1, [(1, 0, 10, 10)], np.array([[0.0, 1.0]]))[0]
    assert again.id == first.id and again.probs == pytest.approx([0.5, 0.5])


def _follow(frames: list[list[tuple[int, int, int, int]]], fps: float) -> list[list[int]]:
    """The track ids a FaceTracker gives each frame's boxes (one frame per 1/fps s)."""
    tracker = FaceTracker()
    return [[t.id for t in tracker.update(i / fps, boxes, np.full((len(boxes), 2), 0.5))]
            for i, boxes in enumerate(frames)]


def test_a_face_moving_far_between_samples_keeps_its_track():
    # 5 fps sampling, a 100 px face walking 3 of its widths a second: 60 px between samples (IoU 0.25 with the last
    # box, which a plain IoU > 0.3 match lost every frame)
    ids = _follow([[(100 + 60 * i, 200, 100, 100)] for i in range(12)], fps=5)
    assert ids == [[1]] * 12


def test_a_face_the_detector_misses_for_a_third_of_a_second_keeps_its_track():
    # 25 fps, moving 4 px a frame; frames 10-17 (0.32 s) without a detection: a blink, a turned head
    frames = [[] if 10 <= i < 18 else [(100 + 4 * i, 200, 100, 100)] for i in range(40)]
    ids = _follow(frames, fps=25)
    assert {i for frame in ids for i in frame} == {1}


def test_two_faces_crossing_keep_their_tracks():
    # A (120 px, in front) walks right, B (100 px) walks left at 6 px a frame; B is hidden behind A's head while
    # their centres are closer than 110 px (18 frames, 0.72 s), then comes out on the other side
    frames = []
    for i in range(70):
        ax, bx = 100 + 6 * i, 760 - 6 * i
        a, b = (ax, 200, 120, 120), (bx + 10, 215, 100, 100)
        frames.append([a] if abs((ax + 60) - (bx + 60)) < 110 else [a, b])
    ids = _follow(frames, fps=25)
    assert all(frame[0] == 1 for frame in ids)  # A
    assert {frame[1] for frame in ids if len(frame) == 2} == {2}  # B, before and after


def test_a_new_face_coming_out_behind_a_hidden_one_gets_its_own_track():
    # A stands still and is hidden (frames 10-19); a different face appears 90 px (0.9 of a side) from where A was:
    # a track the detector lost is taken up again only close to where it was heading
    frames = [[(300, 200, 100, 100)] if i < 10 else [] if i < 20 else [(390, 200, 100, 100)] for i in range(30)]
    ids = _follow(frames, fps=25)
    assert ids[9] == [1] and ids[20:] == [[2]] * 10


def test_corrupt_and_non_video_files_are_clear_errors(tmp_path, clip):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(clip.read_bytes()[:300])
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 50)
    png = tmp_path / "photo.mp4"
    Image.new("RGB", (64, 64)).save(png, format="PNG")
    for path in (broken, text, png):
        with pytest.raises(VideoError, match="send|re-encode"):
            list(sampled_frames(path))


def test_cli_writes_the_table_and_reports_bad_videos(clip, tiny_model, tmp_path, capsys):
    import pandas as pd

    from emotion.__main__ import main

    out = tmp_path / "table.csv"
    assert main(["predict", str(clip), "--model", f"local-dir:{tiny_model}", "--fps", "5", "--csv", str(out)]) == 0
    table = pd.read_csv(out)
    assert set(table.track) == {1, 2} and len(table) == 20 and {"time_s", "x", "happy", "emotion"} <= set(table)
    assert "track 2 from 1.00 s to 2.80 s" in capsys.readouterr().out
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    assert main(["predict", str(bad), "--model", f"local-dir:{tiny_model}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bad}:")


def test_rest_predict_video_returns_tracks_and_rows(client, clip):
    r = client.post("/api/predict_video?fps=5", files={"file": ("clip.mp4", clip.read_bytes(), "video/mp4")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [t["track"] for t in body["tracks"]] == [1, 2] and body["frames_analysed"] == 15
    assert {"time_s", "track", "x", "y", "w", "h", "emotion", "happy"} <= set(body["rows"][0])


def test_rest_refuses_bad_videos_and_options_with_json_4xx(client, clip, monkeypatch):
    png = Image.new("RGB", (32, 32))
    import io

    buf = io.BytesIO()
    png.save(buf, format="PNG")
    cases = [(clip.read_bytes()[:300], "video/mp4", 415), (b"hello " * 100, "video/mp4", 415),
             (buf.getvalue(), "video/mp4", 415), (clip.read_bytes(), "text/plain", 415)]
    for data, ctype, status in cases:
        r = client.post("/api/predict_video", content=data, headers={"content-type": ctype})
        assert r.status_code == status and "send" in r.json()["error"], (ctype, r.text)
    r = client.post("/api/predict_video?fps=0", files={"file": ("c.mp4", clip.read_bytes(), "video/mp4")})
    assert r.status_code == 422 and "fps" in r.json()["error"]
    set_settings(monkeypatch, max_video_seconds=1.0)
    r = client.post("/api/predict_video", files={"file": ("c.mp4", clip.read_bytes(), "video/mp4")})
    assert r.status_code == 413 and "limit of 1 s" in r.json()["error"]
    set_settings(monkeypatch, max_video_bytes=1000)
    r = client.post("/api/predict_video", files={"file": ("c.mp4", clip.read_bytes(), "video/mp4")})
    assert r.status_code == 413


def _webcam_frame(happy: float, uncertain_below: float = 0.0) -> list:
    """One face at the same place, as the predictor gives it: `happy` against `sad`."""
    from emotion.records import FacePrediction

    return [FacePrediction.from_probabilities(np.array([happy, 1 - happy]), ["happy", "sad"], uncertain_below,
                                              (10, 10, 50, 50))]


def test_webcam_labels_are_smoothed_along_tracks():
    tracker = FaceTracker(ema=0.4)
    tracker.track(0.0, _webcam_frame(1.0))
    second = tracker.track(0.2, _webcam_frame(0.0))[0]  # one frame of "sad" does not flip the label
    assert second.track == 1 and second.emotion == "happy" and second.probabilities["happy"] == 0.6
    assert second.box == (10, 10, 50, 50) and second.to_dict()["track"] == 1


def test_a_webcam_session_keeps_no_ended_tracks(tiny_model, astronaut, monkeypatch):
    """Faces that come and go for hours must not grow the session's state: the webcam's tracker drops ended tracks
    (a video keeps them for its summary)."""
    from types import SimpleNamespace

    import webapp.ui
    from webapp.models import ModelRegistry
    from webapp.pool import InferencePool

    clock = iter(range(0, 1000, 2))  # 2 s between frames: every face has left (tracks end after 1 s unseen)
    # webapp.ui's own clock only: patching time.monotonic itself also fed this clock to every other thread of the
    # test session (an earlier module's app and its event loop), which could run it out
    monkeypatch.setattr(webapp.ui, "time", SimpleNamespace(monotonic=lambda: float(next(clock))))
    handlers = webapp.ui.Handlers(ModelRegistry({"tiny": f"local-dir:{tiny_model}"}, "tiny"), InferencePool(1, 4))
    def data_url(pixels: np.ndarray) -> dict:  # what the browser sends for a webcam frame
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "PNG")
        return {"url": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()}

    tracker, frames = None, (data_url(astronaut), data_url(np.full_like(astronaut, 128)))
    for _ in range(6):
        for frame in frames:
            _, _, tracker = handlers.live_frame(frame, "tiny", 20, 0.5, "short", tracker)
    assert tracker.tracks() == []  # six faces came and left; nothing is kept


def test_webcam_uncertain_flag_follows_the_smoothed_confidence():
    tracker = FaceTracker(ema=0.4)
    tracker.track(0.0, _webcam_frame(1.0, 0.7), uncertain_below=0.7)
    (alone,) = _webcam_frame(0.0, 0.7)
    second = tracker.track(0.2, [alone], uncertain_below=0.7)[0]
    # the frame alone was sure of "sad" (not uncertain); the label shown is "happy" at 0.6: that is uncertain
    assert not alone.uncertain and second.emotion == "happy" and second.uncertain is True


# ------------------------------------------------------------------------------------------------------ the Video tab
def test_video_tab_gives_the_timeline_key_frames_table_and_csv(client, clip, predictor, tiny_model):
    import pandas as pd
    from gradio.utils import get_upload_folder

    from test_app import gradio_call, gradio_upload

    info = client.get("/gradio_api/info").json()["named_endpoints"]["/predict_video"]
    assert [p["parameter_name"] for p in info["parameters"]] == ["video", "model", "sampling", "rate", "max_faces",
                                                                 "min_detection_score", "action_units"]
    ref = gradio_upload(client, "clip.mp4", clip.read_bytes())
    event, data = gradio_call(client, "predict_video", [ref, tiny_model.name, "fps", 5, 20, 0.5, False])
    assert event == "complete", data
    summary, plot, gallery, table, csv = data
    assert "**2 faces**" in summary and "15 sampled frames" in summary
    # the timeline: each face's two most likely emotions, at the times the face was seen (A 0-1.8 s, B 1-2.8 s)
    points = pd.DataFrame(plot["data"], columns=plot["columns"])
    assert set(points.face.str.split(":").str[0]) == {"Face 1", "Face 2"} and points.face.nunique() == 4
    times = {face: sorted(group.time_s) for face, group in points.groupby(points.face.str.split(":").str[0])}
    assert times["Face 1"] == pytest.approx(sorted([i / 5 for i in range(10)] * 2))
    assert times["Face 2"] == pytest.approx(sorted([1 + i / 5 for i in range(10)] * 2))
    # the CSV is the per-frame table predict_video returns for the same sampling
    expected = predictor.predict_video(clip, fps=5, progress=False, max_faces=20, min_score=0.5).to_pandas()
    got = pd.read_csv(csv["path"])
    assert list(got.columns) == list(expected.columns) and len(got) == len(expected) == 20
    assert got[["time_s", "frame", "track", "x", "y", "w", "h", "emotion"]].equals(
        expected[["time_s", "frame", "track", "x", "y", "w", "h", "emotion"]])
    assert got[predictor.labels].to_numpy() == pytest.approx(expected[predictor.labels].to_numpy(), abs=1e-4)
    # written into Gradio's cache (deleted on its schedule like every output), under a name that is ours
    assert Path(csv["path"]).resolve().is_relative_to(Path(get_upload_folder()).resolve())
    assert Path(csv["path"]).name == "video_emotions.csv"
    faces = pd.DataFrame(table["data"], columns=table["headers"])
    assert faces.face.tolist() == [1, 2] and faces.from_s.tolist() == [0.0, 1.0] and faces.to_s.tolist() == [1.8, 2.8]
    assert [g["caption"].split(" most")[0] for g in gallery] == ["Face 1", "Face 2"]


def test_video_tab_errors_say_what_to_fix(client, clip, tiny_model, tmp_path, monkeypatch):
    import io

    import webapp.video
    from test_app import gradio_call, gradio_upload

    png = io.BytesIO()
    Image.new("RGB", (64, 64)).save(png, format="PNG")
    video_ref = gradio_upload(client, "clip.mp4", clip.read_bytes())
    cases = [
        ([gradio_upload(client, "photo.mp4", png.getvalue()), "fps", 5], "still image"),
        ([gradio_upload(client, "notes.txt", b"not a video\n" * 100), "fps", 5], "send a video|MP4"),
        ([gradio_upload(client, "cut.mp4", clip.read_bytes()[:300]), "fps", 5], "send|re-encode"),
        ([None, "fps", 5], "no video: upload"),
        ([video_ref, "fps", 0], "fps"),
        ([video_ref, "every", 2.5], "every"),
        ([video_ref, "sometimes", 5], "sampling must be"),
    ]
    for (ref, sampling, rate), words in cases:
        event, data = gradio_call(client, "predict_video", [ref, tiny_model.name, sampling, rate, 20, 0.5, False])
        assert event == "error" and re.search(words, data["error"]), (words, data)
        assert "Traceback" not in str(data)
    set_settings(monkeypatch, max_video_seconds=1.0)
    event, data = gradio_call(client, "predict_video", [video_ref, tiny_model.name, "fps", 5, 20, 0.5, False])
    assert event == "error" and "limit of 1 s" in data["error"]


def test_video_tab_runs_on_the_bounded_pool_and_reads_only_uploads(client, clip, tiny_model, tmp_path, monkeypatch):
    import webapp.video
    from emotion import EmotionError
    from test_app import gradio_call, gradio_upload, queue_event
    from webapp.video_ui import video_upload

    ref = gradio_upload(client, "clip.mp4", clip.read_bytes())
    # the worker reports progress to the page (it runs in the event's context): "frame n of 15"
    status, text = queue_event(client, "predict_video", [ref, tiny_model.name, "fps", 5, 20, 0.5, False])
    assert status == 200 and '"process_completed"' in text and '"success":true' in text.replace(" ", "")
    assert re.search(r'"index":\d+,"length":15,"unit":"frames"', text.replace(" ", "")), text
    with webapp.video._one_at_a_time:  # a REST video is being analysed
        event, data = gradio_call(client, "predict_video", [ref, tiny_model.name, "fps", 5, 20, 0.5, False])
    assert event == "error" and "another video is being analysed" in data["error"]
    monkeypatch.setattr(client.app.state.pool, "capacity", 0)
    event, data = gradio_call(client, "predict_video", [ref, tiny_model.name, "fps", 5, 20, 0.5, False])
    assert event == "error" and "busy" in data["error"]
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(clip.read_bytes())
    for payload in ({"path": str(outside)}, str(outside), {"url": f"file://{outside}"}):
        with pytest.raises(EmotionError, match="upload"), video_upload(payload):
            pass
    set_settings(monkeypatch, max_video_bytes=1000)
    with pytest.raises(EmotionError, match="video is over the limit of"), video_upload(ref):
        pass


def _padded(clip: Path, size: int) -> bytes:
    """The clip grown to `size` bytes by an MP4 "free" box at its end (players skip it): a big valid video."""
    import struct

    data = clip.read_bytes()
    pad = size - len(data)
    return data + struct.pack(">I", pad) + b"free" + bytes(pad - 8)


def test_the_video_tab_takes_videos_as_large_as_the_rest_route(client, clip, tiny_model):
    from test_app import gradio_call, gradio_upload
    from webapp.service import megabytes
    from webapp.settings import current

    MAX_UPLOAD_BYTES, MAX_VIDEO_BYTES = current().max_upload_bytes, current().max_video_bytes
    assert client.get("/config").json()["max_file_size"] == MAX_VIDEO_BYTES > MAX_UPLOAD_BYTES  # the page's limit
    big = _padded(clip, MAX_UPLOAD_BYTES + 2**20)  # over a photo's limit, under a video's
    event, data = gradio_call(client, "predict_video", [gradio_upload(client, "big.mp4", big), tiny_model.name, "fps",
                                                        5, 20, 0.5, False])
    assert event == "complete", data
    assert "**2 faces**" in data[0] and "15 sampled frames" in data[0]
    ui = client.get("/config").text
    assert f"Clips up to {megabytes(MAX_VIDEO_BYTES)}" in ui
    assert f"Upload a photo (up to {megabytes(MAX_UPLOAD_BYTES)})" in ui


def test_a_photo_over_its_limit_is_refused_by_size_though_the_page_takes_videos_that_large(client, tiny_model):
    from test_app import gradio_call, gradio_upload
    from webapp.service import megabytes
    from webapp.settings import current

    MAX_UPLOAD_BYTES = current().max_upload_bytes
    big = b"\x89PNG\r\n\x1a\n" + bytes(MAX_UPLOAD_BYTES)  # never opened: refused by its size
    event, data = gradio_call(client, "predict", [gradio_upload(client, "big.png", big), tiny_model.name, 20, 0.5,
                                                  "auto", False])
    assert event == "error" and f"above the limit of {megabytes(MAX_UPLOAD_BYTES)}" in data["error"], data


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="fork is POSIX only")
def test_a_converted_frame_can_be_freed_in_a_forked_child(clip):
    """A frame kept alive (by a traceback, until the garbage collector runs) and freed in a child that Ray or
    multiprocessing forked: with PyAV's default converter threads the child waited forever (a full test run hung in
    `ray.init`)."""
    import os

    from emotion.video import frame_image, open_video

    container, stream = open_video(clip)
    frame = next(container.decode(stream))
    assert frame_image(frame).size == (frame.width, frame.height)
    container.close()
    pid = os.fork()
    if pid == 0:  # the child frees the frame and leaves at once
        del frame
        os._exit(0)
    assert _exits_within(pid, 20), "the forked child hung freeing a converted frame"


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="fork is POSIX only")
@pytest.mark.parametrize("frames", ["sampled", "at"])
def test_a_video_left_half_read_can_be_collected_in_a_forked_child(clip, frames):
    """A generator over a video's frames left suspended before a fork (Ray, multiprocessing) is closed in the child
    when its garbage collector gets to it: closing the decoder there waited forever on FFmpeg's frame threads."""
    import os

    from emotion.video import frames_at

    gen = sampled_frames(clip, fps=5) if frames == "sampled" else frames_at(clip, [0, 5, 10])
    next(gen)
    pid = os.fork()
    if pid == 0:  # the child closes the generator, as its collector would, and leaves
        gen.close()
        os._exit(0)
    exited = _exits_within(pid, 20)
    gen.close()
    assert exited, "the forked child hung closing a half-read video"


def _exits_within(pid: int, seconds: float) -> bool:
    """Whether the child `pid` exits within `seconds`; a child still running then is killed (and reaped)."""
    import os
    import signal
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return False
