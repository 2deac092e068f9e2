"""Videos: faces followed along tracks with stable ids and the right time stamps; bad files are clear errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from emotion import Predictor
from emotion.video import IouTracker, VideoError, sampled_frames

from conftest import ASTRONAUT_FACE

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


def test_sampling_every_nth_frame_and_by_fps(clip):
    assert [i for i, _, _ in sampled_frames(clip, every=10)] == [0, 10, 20]
    assert [round(t, 2) for _, t, _ in sampled_frames(clip, fps=2)] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]


def test_probabilities_are_smoothed_along_a_track():
    tracker = IouTracker(ema=0.5)
    first = tracker.update(0.0, [(0, 0, 10, 10)], np.array([[1.0, 0.0]]))[0]
    again = tracker.update(0.1, [(1, 0, 10, 10)], np.array([[0.0, 1.0]]))[0]
    assert again.id == first.id and again.probs == pytest.approx([0.5, 0.5])


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
    import webapp.video

    monkeypatch.setattr(webapp.video, "MAX_VIDEO_SECONDS", 1.0)
    r = client.post("/api/predict_video", files={"file": ("c.mp4", clip.read_bytes(), "video/mp4")})
    assert r.status_code == 413 and "limit of 1 s" in r.json()["error"]
    monkeypatch.setattr(webapp.video, "MAX_VIDEO_BYTES", 1000)
    r = client.post("/api/predict_video", files={"file": ("c.mp4", clip.read_bytes(), "video/mp4")})
    assert r.status_code == 413


def test_webcam_labels_are_smoothed_along_tracks():
    from emotion.video import IouTracker
    from webapp.video import smooth_live

    def frame(happy: float) -> dict:
        return {"faces": [{"box": {"x": 10, "y": 10, "w": 50, "h": 50}, "emotion": "",
                           "probabilities": {"happy": happy, "sad": 1 - happy}}]}

    tracker = IouTracker(ema=0.4)
    smooth_live(frame(1.0), tracker, 0.0)
    second = smooth_live(frame(0.0), tracker, 0.2)["faces"][0]  # one frame of "sad" does not flip the label
    assert second["track"] == 1 and second["emotion"] == "happy" and second["probabilities"]["happy"] == 0.6
