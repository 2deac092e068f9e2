"""The server's settings (webapp/settings.py): read and validated once, a bad value one line naming the variable."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from emotion import EmotionError
from webapp.settings import Settings, current, use

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_are_the_documented_ones_and_the_queue_scales_with_the_workers():
    s = Settings.from_env({})
    assert (s.max_upload_bytes, s.max_video_bytes, s.max_video_seconds) == (20 * 2**20, 50 * 2**20, 120.0)
    assert (s.header_timeout_s, s.body_idle_timeout_s, s.body_timeout_s) == (10.0, 15.0, 120.0)
    assert (s.body_readers, s.body_readers_per_client, s.host, s.port) == (32, 8, "0.0.0.0", 7860)
    assert s.queue == 4 * s.workers
    s = Settings.from_env({"EMOTION_WORKERS": "3", "EMOTION_MODELS": " small_cnn, ,hf-hub:org/name@v2 ",
                           "EMOTION_MAX_UPLOAD_BYTES": ""})  # empty: the default
    assert (s.workers, s.queue, s.models, s.max_upload_bytes) == (3, 12, ("small_cnn", "hf-hub:org/name@v2"),
                                                                  20 * 2**20)
    assert Settings.from_env({"EMOTION_QUEUE": "0"}).queue == 0
    assert (s.backend, Settings.from_env({"EMOTION_BACKEND": "torch"}).backend) == ("auto", "torch")


@pytest.mark.parametrize("name,value,takes", [
    ("EMOTION_MAX_UPLOAD_BYTES", "20MB", "a whole number of bytes >= 1"),
    ("EMOTION_MAX_VIDEO_BYTES", "0", "a whole number of bytes >= 1"),
    ("EMOTION_MAX_VIDEO_SECONDS", "nan", "seconds > 0"),
    ("EMOTION_BODY_TIMEOUT", "-1", "seconds > 0"),
    ("EMOTION_HEADER_TIMEOUT", "soon", "seconds > 0"),
    ("EMOTION_WORKERS", "0", "a whole number >= 1"),
    ("EMOTION_QUEUE", "-2", "a whole number >= 0"),
    ("EMOTION_BODY_READERS", "1.5", "a whole number >= 1"),
    ("EMOTION_BODY_READERS_PER_CLIENT", "0", "a whole number >= 1"),
    ("PORT", "70000", "a TCP port number"),
    ("EMOTION_BACKEND", "cuda", "auto, int8, onnxruntime or torch"),
    ("EMOTION_MODEL", "org/name", "hf-hub:org/name"),
    ("EMOTION_MODELS", "local-dir:", "local-dir:/path/to/folder"),
])
def test_a_bad_value_names_the_variable_and_what_it_takes(name, value, takes):
    with pytest.raises(EmotionError) as e:  # a SettingsError; a model source's own error for the models
        Settings.from_env({name: value})
    assert (name in str(e.value) or "EMOTION_MODEL" in str(e.value)) and takes in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_create_app_serves_with_the_settings_it_is_given(tiny_model, astronaut):
    import app as app_module
    from test_app import png_bytes

    before = current()
    try:
        app = app_module.create_app(Settings(model=f"local-dir:{tiny_model}", max_upload_bytes=200_000))
        with TestClient(app) as client:
            assert client.get("/api/health").json()["max_upload_bytes"] == 200_000
            assert client.get("/config").json()["max_file_size"] == 50 * 2**20  # the larger: a video's
            r = client.post("/api/predict", files={"file": ("a.png", png_bytes(astronaut), "image/png")})
            assert r.status_code == 413 and "above the limit of 0.2 MB" in r.json()["error"], r.text
            assert app.state.pool.capacity == app.state.settings.workers * 5
    finally:
        use(before)


def test_python_app_py_with_a_bad_limit_is_one_line_naming_it():
    env = {**os.environ, "EMOTION_MAX_UPLOAD_BYTES": "20MB", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "GRADIO_ANALYTICS_ENABLED": "False"}
    done = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: EMOTION_MAX_UPLOAD_BYTES='20MB' cannot be used: it takes a whole number of bytes >= 1 (20971520 is "
        "20 MB)"], done.stderr[-2000:]
