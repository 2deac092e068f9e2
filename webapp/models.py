"""Which models the app may serve, and one Predictor per model, loaded on first use and shared by all requests."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from emotion import EmotionError, Predictor
from emotion.sources import model_id, parse, revision, shipped_default, shipped_models

if TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger(__name__)


class ModelUnavailableError(EmotionError):
    """The model is configured but cannot be served (no model at all, or it failed to load): the server's fault."""

    status = 503


def public_source(source: str) -> str:
    """What responses say about a source: a Hub id as is, a server folder only by its id (never its path)."""
    return source if source.startswith("hf-hub:") else f"local:{model_id(source)}"


@dataclass
class ModelRegistry:
    """The selectable models (id -> source) and the default one; `get` loads each once, thread-safely.

    Args:
        sources: model id -> `hf-hub:` / `local-dir:` source, in display order.
        default: the id used when a request names no model; None when nothing is configured.
        problem: why there is no default (shown to callers instead of a stack trace).
    """

    sources: dict[str, str]
    default: str | None
    problem: str | None = None
    backend: str = "auto"  # what runs the classifiers (EMOTION_BACKEND; emotion.backends)
    _loaded: dict[str, Predictor] = field(default_factory=dict, repr=False)
    _locks: dict[str, threading.Lock] = field(default_factory=dict, repr=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_env(cls) -> "ModelRegistry":
        """The registry for the environment's settings (EMOTION_MODEL, EMOTION_MODELS); see `from_settings`."""
        from .settings import Settings

        return cls.from_settings(Settings.from_env())

    @classmethod
    def from_settings(cls, settings: "Settings") -> "ModelRegistry":
        """Shipped models (models/) + settings.model + settings.models; settings.model is the default when set."""
        sources = dict(shipped_models())
        for source in (str(parse(s, "model source (from EMOTION_MODEL / EMOTION_MODELS)"))
                       for s in (settings.model, *settings.models) if s.strip()):
            if source in sources.values():
                continue
            name = model_id(source)
            sources[name if name not in sources else source] = source
        try:  # EMOTION_MODEL, else models/DEFAULT
            chosen = str(parse(settings.model, "EMOTION_MODEL")) if settings.model else shipped_default()
        except EmotionError as e:
            if sources:
                log.warning("no usable default model (%s); serving %s as the default", e, next(iter(sources)))
            return cls(sources, next(iter(sources), None), None if sources else str(e), settings.backend)
        default = next((k for k, v in sources.items() if v == chosen), None)
        return cls(sources, default, backend=settings.backend)

    def resolve(self, name: str | None) -> str:
        """A request's model (an id, a configured source, or None for the default) -> its id."""
        if not name:
            if self.default is None:
                raise ModelUnavailableError(self.problem or "no model is configured: set EMOTION_MODEL to "
                                            "hf-hub:org/name or local-dir:/path, or ship an export in models/")
            return self.default
        if name in self.sources:
            return name
        for key, source in self.sources.items():
            if name in (source, public_source(source)):
                return key
        choices = ", ".join(self.sources) or "(none configured)"
        raise EmotionError(f"unknown model {name!r}: choose one of {choices}, or leave it out for the default "
                           f"({self.default})")

    def get(self, name: str | None = None) -> tuple[str, Predictor]:
        """The model's id and its shared Predictor, loading it on first use."""
        key = self.resolve(name)
        if key in self._loaded:
            return key, self._loaded[key]
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # one load per model even when the first requests arrive together
            if key not in self._loaded:
                log.info("loading model %s from %s", key, self.sources[key])
                try:
                    self._loaded[key] = Predictor.from_pretrained(self.sources[key], backend=self.backend)
                except EmotionError as e:  # its message may name server paths: logged here, not answered
                    log.error("model %s (%s) could not be loaded: %s", key, self.sources[key], e)
                    raise ModelUnavailableError(f"model {key!r} could not be loaded (the server log says why): "
                                                "retry later, or choose another model") from None
        return key, self._loaded[key]

    def is_loaded(self, name: str | None = None) -> bool:
        try:
            return self.resolve(name) in self._loaded
        except EmotionError:
            return False

    def uncertain_threshold(self, name: str | None = None) -> float:
        """The model's threshold below which a face is marked uncertain (loads the model on first use)."""
        return self.get(name)[1].uncertain_threshold

    def describe(self, key: str) -> dict:
        """What a response says about a model: id, source, revision and, once loaded, its facts."""
        source = self.sources[key]
        out = {"id": key, "source": public_source(source), "revision": revision(source), "default": key == self.default,
               "loaded": key in self._loaded}
        if key in self._loaded:
            info = self._loaded[key].info
            head = info.head()  # the second look at one label (emotion/blendshape_head.py), or None
            out.update(architecture=info.architecture, labels=list(info.labels), temperature=info.temperature,
                       uncertain_threshold=info.uncertain_threshold,
                       blendshape_head=None if head is None else {
                           "label": head.label, "features": len(head.weights), "gate": head.gate,
                           "landmark_features": len(head.landmark_features)})
        return out
