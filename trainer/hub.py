"""Push an exported model folder (weights, config.json, model card, eval results) to the Hugging Face Hub.

The token comes from the argument, HF_TOKEN or the saved `hf auth login`, and is never printed or logged. Every
failure becomes a one-line `HubError` whose message says what to do about it.
"""
from __future__ import annotations

import importlib
import logging
import os
import re
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import HubError

log = logging.getLogger(__name__)

REQUIRED_FILES = ("model.safetensors", "config.json")
DEFAULT_COMMIT_MESSAGE = "Upload facial-expression model (weights, config, card, eval results)"
LOGIN_FIX = "run `hf auth login` (older huggingface_hub: `huggingface-cli login`) or set HF_TOKEN"
REPO_ID_RE = re.compile(r"^[\w.-]+/[\w.-]+$", re.ASCII)


def upload_files(export_dir: str | Path) -> list[str]:
    """The exact files `push_to_hub` uploads, as sorted POSIX paths relative to `export_dir`.

    Everything regular in the folder goes, except hidden files and folders (`.cache/`, `.DS_Store`, ...), symbolic
    links and half-written checkpoints (`checkpoints/**/*.tmp`).

    Args:
        export_dir: The exported model folder.

    Returns:
        Relative paths such as ["README.md", "config.json", "model.safetensors"].
    """
    root = Path(export_dir)
    if not root.is_dir():
        raise HubError(f"{root} is not a folder: export the model there first (model.safetensors + config.json)")
    files = []
    for folder, dirs, names in os.walk(root):  # os.walk does not follow symlinked folders
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            path = Path(folder) / name
            rel = path.relative_to(root)
            if name.startswith(".") or path.is_symlink() or not path.is_file():
                continue
            if rel.parts[0] == "checkpoints" and name.endswith(".tmp"):
                continue
            files.append(rel.as_posix())
    return sorted(files)


def push_to_hub(export_dir: str | Path, repo_id: str, private: bool = False, revision: str | None = None,
                dry_run: bool = False, token: str | None = None,
                commit_message: str = DEFAULT_COMMIT_MESSAGE) -> str:
    """Create the model repo if needed and upload the export folder to it in one commit.

    The card (README.md) is rendered first when the folder has none, or has the export's generated card whose
    examples still show a placeholder repo id. The Hub address is HF_ENDPOINT when set, else huggingface.co.

    Args:
        export_dir: Folder with model.safetensors and config.json (and eval_results.json, confusion_matrix.png, ...).
        repo_id: `user-or-org/name`.
        private: Create the repo as private (an existing repo keeps its visibility).
        revision: Branch to commit to; created from main when it does not exist. None means main.
        dry_run: Only list what would be uploaded (and whether the card would be rendered): no token, no
            network, nothing written.
        token: A Hub token with write access; defaults to HF_TOKEN or the saved login.
        commit_message: Summary line of the commit.

    Returns:
        The commit URL, or for a dry run a short text listing the files that would be uploaded.

    Raises:
        HubError: With a one-line message naming the fix (no token, rejected token, bad repo id, no network...).
    """
    export_dir, branch = Path(export_dir), revision or "main"
    _check_repo_id(repo_id)
    _check_export(export_dir)
    if dry_run:  # says what the push would do to the card, and writes nothing
        render = _card_needs_render(export_dir, repo_id)
        files = sorted(set(upload_files(export_dir)) | ({"README.md"} if render else set()))
        summary = (f"dry run: {'would render README.md for ' + repo_id + ', then ' if render else ''}"
                   f"would upload {len(files)} files from {export_dir} to {repo_id} ({branch}): " + ", ".join(files))
        log.info(summary)
        return summary
    _ensure_card(export_dir, repo_id)
    files = upload_files(export_dir)

    from huggingface_hub import HfApi

    token = _resolve_token(token)
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)  # read now, not at import
    with _hub_errors(repo_id, api.endpoint, token):
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        if branch != "main":
            api.create_branch(repo_id, branch=branch, repo_type="model", exist_ok=True)
        info = api.upload_folder(folder_path=export_dir, repo_id=repo_id, repo_type="model", revision=branch,
                                 allow_patterns=[_literal_pattern(f) for f in files], commit_message=commit_message)
    log.info("pushed %d files to %s (%s): %s", len(files), repo_id, branch, info.commit_url)
    return info.commit_url


# ------------------------------------------------------------------------------------------------------- checks
def _check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    fix = "write it as <user-or-org>/<name> with letters, digits, '-', '_' and '.' (at most 96 characters)"
    if not isinstance(repo_id, str) or not REPO_ID_RE.match(repo_id):
        raise HubError(f"malformed repo id {repo_id!r}: {fix}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise HubError(f"malformed repo id {repo_id!r}: {fix}, not starting or ending with '-' or '.' "
                           "and without '--' or '..'") from None


def _check_export(export_dir: Path) -> None:
    missing = [name for name in REQUIRED_FILES if not (export_dir / name).is_file()]
    if missing:
        raise HubError(f"{export_dir} has no {', '.join(missing)}: export the trained model there before pushing")


def _ensure_card(export_dir: Path, repo_id: str) -> None:
    """Make sure README.md exists and its code examples name `repo_id`.

    A missing card is rendered. The export renders one before the repo id is known, with a placeholder in its
    examples; such a generated card is rendered again for this repo. A hand-written card is left alone.
    """
    from model_card.render import PLACEHOLDER_REPO, render_card

    readme = export_dir / "README.md"
    if _card_needs_render(export_dir, repo_id):
        log.info("rendering the model card (README.md) in %s for %s", export_dir, repo_id)
        render_card(export_dir, repo_id)
    elif PLACEHOLDER_REPO in readme.read_text(encoding="utf-8", errors="replace"):
        log.warning("%s shows the placeholder %s in its examples: replace it with %s before pushing",
                    readme, PLACEHOLDER_REPO, repo_id)


def _card_needs_render(export_dir: Path, repo_id: str) -> bool:
    """No card yet, or the export's generated card with the placeholder repo id: a push renders it for repo_id."""
    from model_card.render import GENERATED_MARK, PLACEHOLDER_REPO

    readme = export_dir / "README.md"
    text = readme.read_text(encoding="utf-8", errors="replace") if readme.is_file() else None
    return text is None or (GENERATED_MARK in text and PLACEHOLDER_REPO in text)


def _resolve_token(token: str | None) -> str:
    from huggingface_hub import get_token

    token = token or get_token()  # HF_TOKEN, then the file `hf auth login` writes
    if not token:
        raise HubError(f"no Hugging Face token found: {LOGIN_FIX} (the token needs write access)")
    return token


def _literal_pattern(path: str) -> str:
    """An fnmatch pattern that matches exactly `path`, so upload_folder sends what upload_files listed."""
    return re.sub(r"([*?\[])", r"[\1]", path)


# ------------------------------------------------------------------------------------------------------- errors
def _network_errors() -> tuple[type[BaseException], ...]:
    """Transport failures of whichever HTTP client this huggingface_hub uses (httpx2, httpx or requests)."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError, socket.gaierror]
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                         ("requests", "ConnectionError"), ("requests", "Timeout")):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _one_line(text: object, token: str | None, limit: int = 200) -> str:
    text = " ".join(str(text or "").split())
    if token:
        text = text.replace(token, "<token>")  # a server echoing the header must not put it in our message
    return text[:limit]


def _http_message(status: int | None, server: str, repo_id: str, endpoint: str) -> str:
    namespace = repo_id.split("/")[0]
    if status == 401:
        return (f"the Hub rejected the token (401 Unauthorized) for {repo_id}: log in again with a valid write "
                f"token ({LOGIN_FIX})")
    if status == 403:
        return (f"the token may not write to {namespace!r} (403 Forbidden): use a token with write access to it "
                f"({LOGIN_FIX}), or push to a repo in your own namespace")
    if status == 404:
        return (f"repo {repo_id} was not found or is not visible to this token (404): check the repo id and that "
                f"the token can write to {namespace!r}")
    if status == 429:
        return "the Hub is rate-limiting this token (429 Too Many Requests): wait a few minutes and push again"
    if status is not None and status >= 500:
        return f"the Hub at {endpoint} had a server error (HTTP {status}): retry in a few minutes"
    detail = f": {server}" if server else ""
    return f"the Hub refused the upload to {repo_id} (HTTP {status}{detail}); fix what it names and push again"


@contextmanager
def _hub_errors(repo_id: str, endpoint: str, token: str) -> Iterator[None]:
    """Turn huggingface_hub / network exceptions into one-line HubErrors that name the fix."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        yield
    except OfflineModeIsEnabled:
        raise HubError("huggingface_hub is in offline mode: unset HF_HUB_OFFLINE to push "
                           "(or pass dry_run=True to only list the files)") from None
    except HfHubHTTPError as e:
        status = e.response.status_code if getattr(e, "response", None) is not None else None
        server = _one_line(getattr(e, "server_message", None), token)
        raise HubError(_http_message(status, server, repo_id, endpoint)) from None
    except _network_errors() as e:
        raise HubError(f"cannot reach the Hub at {endpoint} ({type(e).__name__}): check the network connection "
                           "(and HF_ENDPOINT if you set it), then push again") from None
    except ValueError as e:
        # upload_folder raises ValueError when the Hub finds README.md's YAML header invalid
        if "README.md" in str(e):
            raise HubError(f"the Hub rejected README.md's metadata ({_one_line(e, token, 120)}): delete "
                               "README.md so it is re-rendered, or fix its YAML header") from None
        raise
