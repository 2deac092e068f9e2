"""The server's settings: every environment variable it reads, with its default and what it takes, in one place.

`Settings.from_env()` reads and validates them once, in `create_app`; a bad value is an `EmotionError` (one
startup line naming the variable and what it takes), never a traceback. `create_app` then installs the settings
(`use`) for the code that has no `create_app` in reach (Gradio components, the UI's texts), which reads them with
`current()`; until then `current()` is the defaults.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from emotion import EmotionError
from emotion.backends import BACKENDS
from emotion.sources import parse
from emotion.threads import CORES

MB = 2**20
FRAMING = 64 * 1024  # room for multipart or JSON framing around a file in a request body


def _setting(env: str, takes: str, default: Any = None, low: float | None = None, high: float | None = None,
             factory: Any = None) -> Any:
    meta = {"env": env, "takes": takes, "low": low, "high": high}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


class SettingsError(EmotionError):
    """An environment variable the server reads has a value it cannot use."""


@dataclass(frozen=True)
class Settings:
    """What the server's operator may set (environment variable in each field's metadata)."""

    model: str = _setting("EMOTION_MODEL", "a model source: a shipped model's name, hf-hub:org/name[@revision] "
                                           "or local-dir:/path", "")  # the default model; else models/DEFAULT
    models: tuple[str, ...] = _setting("EMOTION_MODELS", "comma-separated model sources, each as EMOTION_MODEL", ())
    backend: str = _setting("EMOTION_BACKEND", "auto, int8, onnxruntime or torch (auto: ONNX Runtime on a model's "
                            "current model.int8.onnx, else its model.onnx, else torch)", "auto")  # what runs the classifiers (emotion.backends)
    workers: int = _setting("EMOTION_WORKERS", "a whole number >= 1", low=1, factory=lambda: min(CORES, 2))
    queue: int = _setting("EMOTION_QUEUE", "a whole number >= 0 (default: 4 x EMOTION_WORKERS)", -1, low=0)
    max_upload_bytes: int = _setting("EMOTION_MAX_UPLOAD_BYTES", "a whole number of bytes >= 1 (20971520 is 20 "
                                     "MB)", 20 * MB, low=1)  # a photo; checked before decoding
    max_video_bytes: int = _setting("EMOTION_MAX_VIDEO_BYTES", "a whole number of bytes >= 1 (52428800 is 50 "
                                    "MB)", 50 * MB, low=1)  # a video, over REST and in the UI
    max_video_seconds: float = _setting("EMOTION_MAX_VIDEO_SECONDS", "seconds > 0", 120.0, low=0)
    header_timeout_s: float = _setting("EMOTION_HEADER_TIMEOUT", "seconds > 0", 10.0, low=0)
    body_idle_timeout_s: float = _setting("EMOTION_BODY_IDLE_TIMEOUT", "seconds > 0", 15.0, low=0)
    body_timeout_s: float = _setting("EMOTION_BODY_TIMEOUT", "seconds > 0", 120.0, low=0)
    body_readers: int = _setting("EMOTION_BODY_READERS", "a whole number >= 1", 32, low=1)
    body_readers_per_client: int = _setting("EMOTION_BODY_READERS_PER_CLIENT", "a whole number >= 1", 8, low=1)
    # uvicorn's own variable: `uvicorn app:app` reads the same; only these proxies may say who the client is
    forwarded_allow_ips: str = _setting("FORWARDED_ALLOW_IPS", "comma-separated IP addresses or networks of the "
                                        "proxies to believe (127.0.0.1,10.0.0.0/8), or * for any",
                                        "127.0.0.1,::1")
    host: str = _setting("HOST", "an address to listen on", "0.0.0.0")
    port: int = _setting("PORT", "a TCP port number, 1..65535", 7860, low=1, high=65535)

    def __post_init__(self) -> None:
        if self.queue == -1:  # not given: scales with the workers
            object.__setattr__(self, "queue", 4 * self.workers)
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            low, high = meta["low"], meta["high"]
            if low is not None and not (value >= low if f.name in _INCLUSIVE else value > low) \
                    or high is not None and value > high or isinstance(value, float) and not math.isfinite(value):
                raise _bad(f, value)
        try:
            _proxies(self.forwarded_allow_ips)
        except ValueError:
            raise _bad(next(f for f in dataclasses.fields(self) if f.name == "forwarded_allow_ips"),
                       self.forwarded_allow_ips) from None
        if self.backend not in BACKENDS:
            raise _bad(next(f for f in dataclasses.fields(self) if f.name == "backend"), self.backend)
        for source in (self.model, *self.models):
            if source:
                parse(source, "model source (from EMOTION_MODEL / EMOTION_MODELS)")  # one line naming the forms

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """The settings from `environ` (default os.environ): unset or empty variables keep their defaults."""
        environ = os.environ if environ is None else environ
        given: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            text = environ.get(f.metadata["env"], "").strip()
            if text:
                given[f.name] = _convert(f, text)
        return cls(**given)

    # ------------------------------------------------------------------------------------------ derived limits
    @property
    def photo_body_limit(self) -> int:
        """A request body carrying one photo: room for base64 (4/3) and the framing around it."""
        return self.max_upload_bytes * 4 // 3 + FRAMING

    @property
    def video_body_limit(self) -> int:
        return self.max_video_bytes + FRAMING

    @property
    def trusted_proxies(self) -> list[str]:
        """The proxies whose X-Forwarded-For names the client, for uvicorn's `forwarded_allow_ips`."""
        return _proxies(self.forwarded_allow_ips)

    @property
    def max_file_bytes(self) -> int:
        """The page's upload limit (Gradio's max_file_size, one value for every upload component): the largest file
        any tab takes; each handler then holds its own kind to its own limit (a photo to max_upload_bytes)."""
        return max(self.max_upload_bytes, self.max_video_bytes)


_INCLUSIVE = {"workers", "queue", "max_upload_bytes", "max_video_bytes", "body_readers", "body_readers_per_client",
              "port"}  # the others (seconds) must be strictly above their bound


def _proxies(text: str) -> list[str]:
    """FORWARDED_ALLOW_IPS as uvicorn takes it: ["*"], or each address or network written as uvicorn parses it (it
    would keep a typo, or a network with host bits set, as a name that no connection ever has); ValueError if an
    entry is neither."""
    entries = [e.strip() for e in text.split(",")]
    if entries == ["*"]:
        return entries
    return [str(ipaddress.ip_network(e, strict=False)) if "/" in e else str(ipaddress.ip_address(e)) for e in entries]


def _bad(f: dataclasses.Field, value: Any) -> SettingsError:
    return SettingsError(f"{f.metadata['env']}={value!r} cannot be used: it takes {f.metadata['takes']}")


def _convert(f: dataclasses.Field, text: str) -> Any:
    try:
        if f.type in ("int", int):
            return int(text)
        if f.type in ("float", float):
            return float(text)
    except ValueError:
        raise _bad(f, text) from None
    if f.name == "models":
        return tuple(s.strip() for s in text.split(",") if s.strip())
    return text


_current = Settings()


def current() -> Settings:
    """The settings `create_app` installed (the defaults before it runs)."""
    return _current


def use(settings: Settings) -> Settings:
    """Installs `settings` for `current()`; returns them."""
    global _current
    _current = settings
    return settings
