"""Hub push against a fake Hub on 127.0.0.1: exactly the listed files, byte for byte, and the token never shows."""
from __future__ import annotations

import base64
import json
import logging
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from huggingface_hub import constants

from conftest import needs_torch

from trainer.errors import HubError
from trainer.hub import push_to_hub, upload_files

TOKEN = "hf_fake_secret_123"
REPO_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/(?P<action>preupload|commit|branch|revision)/(?P<rev>[^?]+)")


class FakeHub(BaseHTTPRequestHandler):
    """Just the Hub API that create_repo, create_branch and upload_folder (huggingface_hub 2.4) call."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep the test output quiet
        pass

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _serve(self) -> None:
        state = self.server.state
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        state["requests"].append((self.command, self.path))
        if self.path == "/api/agent-harnesses":  # huggingface_hub's agent detection, asked without a token
            return self._reply(404, {"error": "not here"})
        state["auth"].add(self.headers.get("Authorization"))
        if self.headers.get("Authorization") != f"Bearer {state['token']}":
            return self._reply(401, {"error": "Invalid credentials in Authorization header"})
        base = f"http://{self.headers['Host']}"
        m = REPO_API.match(self.path)
        if self.command == "POST" and self.path == "/api/repos/create":
            state["created"].append(json.loads(body))
            payload = json.loads(body)
            return self._reply(200, {"url": f"{base}/{payload['organization']}/{payload['name']}"})
        if self.command == "POST" and self.path == "/api/validate-yaml":
            state["validated"].append(json.loads(body)["content"])
            return self._reply(200, {"errors": [], "warnings": []})
        if self.command == "POST" and m and m["action"] == "branch":
            state["branches"].append(m["rev"])
            return self._reply(200, {})
        if self.command == "POST" and m and m["action"] == "preupload":
            files = json.loads(body)["files"]  # small files: tell the client to send them inline, no LFS/Xet
            return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                               for f in files]})
        if self.command == "POST" and m and m["action"] == "commit":
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            state["commits"].append({"revision": m["rev"], "header": lines[0]["value"], "files": {
                x["value"]["path"]: base64.b64decode(x["value"]["content"]) for x in lines[1:] if x["key"] == "file"},
                "other": [x for x in lines[1:] if x["key"] != "file"]})
            oid = f"{len(state['commits']):040x}"
            return self._reply(200, {"commitUrl": f"{base}/{m['repo']}/commit/{oid}", "commitOid": oid})
        return self._reply(404, {"error": f"fake hub: no route for {self.command} {self.path}"})

    do_GET = do_POST = do_PUT = _serve


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A fake Hub on a free port; HF_ENDPOINT points at it, no token is configured anywhere."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    server.daemon_threads = True
    server.state = {"token": TOKEN, "requests": [], "auth": set(), "created": [], "validated": [], "branches": [],
                    "commits": []}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setattr(constants, "ENDPOINT", url)  # read at import: stray calls (agent registry) come here too
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # conftest sets offline mode for every other test
    no_login(monkeypatch, tmp_path)
    yield server.state
    server.shutdown()
    server.server_close()


def no_login(monkeypatch, tmp_path):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-saved-token"))


@pytest.fixture
def export_dir(tmp_path) -> Path:
    """An export folder with the usual files, one extra, and things that must stay home."""
    folder = tmp_path / "export"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / ".cache").mkdir()
    labels = ["anger", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    (folder / "config.json").write_text(json.dumps({
        "architecture": "small_cnn", "num_classes": 8, "label_names": labels,
        "pretrained_cfg": {"input_size": [1, 48, 48], "mean": [0.5], "std": [0.5]},
        "emotion": {"temperature": 1.31}}))
    (folder / "eval_results.json").write_text(json.dumps({"model_name": "small_cnn", "splits": {
        "validation": {"n": 3396, "accuracy": 0.85, "macro_f1": 0.66}}}))
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 4)  # not parsed: only the bytes must arrive
    (folder / "confusion_matrix.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    (folder / "checkpoints" / "best.safetensors").write_bytes(b"checkpoint")
    (folder / "checkpoints" / "last.safetensors.tmp").write_bytes(b"half-written")
    (folder / ".DS_Store").write_bytes(b"junk")
    (folder / ".cache" / "x.lock").write_bytes(b"lock")
    return folder


def test_upload_files_lists_regular_files_but_not_hidden_or_temporary(export_dir):
    (export_dir / "README.md").write_text("# card\n")
    (export_dir / "link.json").symlink_to(export_dir / "config.json")
    assert upload_files(export_dir) == ["README.md", "checkpoints/best.safetensors", "config.json",
                                        "confusion_matrix.png", "eval_results.json", "model.safetensors"]


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("card", ["none", "generated with the placeholder"])
def test_dry_run_writes_nothing_and_lists_files_without_token_or_network(card, export_dir, monkeypatch, tmp_path):
    no_login(monkeypatch, tmp_path)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: any request would fail
    if card != "none":
        from model_card.render import render_card

        render_card(export_dir)  # what the export writes before the repo id is known
    before = snapshot(export_dir)
    summary = push_to_hub(export_dir, "acme/fer-small", dry_run=True)
    assert snapshot(export_dir) == before  # a dry run changes nothing on disk
    assert "README.md" in summary and "acme/fer-small" in summary
    assert "would render README.md" in summary
    assert summary.endswith(", ".join(sorted(set(upload_files(export_dir)) | {"README.md"})))


@needs_torch
def test_dry_run_from_the_command_line_writes_nothing(export_dir, monkeypatch, tmp_path, capsys):
    from trainer.__main__ import main

    no_login(monkeypatch, tmp_path)
    before = snapshot(export_dir)
    assert main(["push", str(export_dir), "--repo-id", "acme/fer-small", "--dry-run"]) == 0
    assert snapshot(export_dir) == before
    assert "would upload 6 files" in capsys.readouterr().out


def test_push_uploads_exactly_the_listed_files_and_never_shows_the_token(hub, export_dir, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    url = push_to_hub(export_dir, "acme/fer-small", token=TOKEN, commit_message="first model")

    listed = upload_files(export_dir)
    assert "README.md" in listed  # rendered for the push
    [commit] = hub["commits"]
    assert sorted(commit["files"]) == listed and not commit["other"]
    assert all(commit["files"][name] == (export_dir / name).read_bytes() for name in listed)
    assert commit["revision"] == "main" and commit["header"]["summary"] == "first model"
    assert hub["created"] == [{"name": "fer-small", "organization": "acme", "visibility": "public", "type": "model"}]
    assert "acme/fer-small" in commit["files"]["README.md"].decode()  # the card names the real repo
    assert url.endswith("/acme/fer-small/commit/" + "1".zfill(40))
    assert hub["auth"] == {f"Bearer {TOKEN}"}  # every repo call carried the token (to the endpoint we chose)

    out, err = capfd.readouterr()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert TOKEN not in out + err + logged and "fake_secret" not in out + err + logged


def test_push_to_a_branch_creates_it_and_commits_there(hub, export_dir, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # from the environment this time
    push_to_hub(export_dir, "acme/fer-small", revision="experiment", private=True)
    assert hub["branches"] == ["experiment"]
    assert hub["commits"][0]["revision"] == "experiment"
    assert hub["created"][0]["visibility"] == "private"


def test_missing_token_is_a_one_line_error_naming_the_fix(hub, export_dir):
    with pytest.raises(HubError) as e:
        push_to_hub(export_dir, "acme/fer-small")
    message = str(e.value)
    assert "\n" not in message and "HF_TOKEN" in message and "login" in message
    assert [r for r in hub["requests"] if "agent-harnesses" not in r[1]] == []


def test_rejected_token_names_the_fix_and_hides_the_token(hub, export_dir):
    hub["token"] = "hf_the_real_one"
    with pytest.raises(HubError) as e:
        push_to_hub(export_dir, "acme/fer-small", token=TOKEN)
    message = str(e.value)
    assert "401" in message and "login" in message and "\n" not in message and TOKEN not in message
    assert hub["commits"] == []


def test_unreachable_hub_names_the_fix(export_dir, monkeypatch, tmp_path):
    with socket.socket() as s:  # a port that was free a moment ago: connection refused, at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(HubError, match="cannot reach the Hub") as e:
        push_to_hub(export_dir, "acme/fer-small", token=TOKEN)
    assert "\n" not in str(e.value) and TOKEN not in str(e.value)


def test_offline_mode_names_the_fix(export_dir, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match="HF_HUB_OFFLINE"):
        push_to_hub(export_dir, "acme/fer-small", token=TOKEN)


@pytest.mark.parametrize("repo_id", ["fer-small", "acme/fer small", "acme/x/y", "acme/-bad-", "acme/a..b", ""])
def test_malformed_repo_id_names_the_fix(export_dir, repo_id):
    with pytest.raises(HubError, match="<user-or-org>/<name>"):
        push_to_hub(export_dir, repo_id, token=TOKEN, dry_run=True)


def test_missing_weights_names_the_fix(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(HubError, match="model.safetensors.*export"):
        push_to_hub(tmp_path, "acme/fer-small", dry_run=True)
