"""Emotion Detection's inference core: faces in any photo -> calibrated probabilities over 8 emotions.

    from emotion import Predictor
    result = Predictor.from_pretrained().predict("photo.jpg")   # or "resnet50", "hf-hub:org/name", "local-dir:/path"
"""
from .errors import EmotionError, ImageTooLargeError, UnsupportedImageError
from .labels import LABELS, canonical

__all__ = ["EmotionError", "ImageTooLargeError", "UnsupportedImageError", "LABELS", "canonical", "Predictor",
           "FacePrediction", "ImagePrediction", "default_source", "shipped_models"]
_LAZY = ("Predictor", "FacePrediction", "ImagePrediction", "default_source", "shipped_models")


def __getattr__(name: str):
    # The predictor (MediaPipe, ONNX Runtime) loads on first use, so `emotion.preprocess` or `emotion.faces` stay
    # light; nothing here or in the predictor imports torch (only emotion.torch_backend and emotion.models do).
    if name in ("FacePrediction", "ImagePrediction"):
        from . import records

        return getattr(records, name)
    if name in _LAZY:
        from . import predict

        return getattr(predict, name)
    raise AttributeError(f"module 'emotion' has no attribute {name!r}")
