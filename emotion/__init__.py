"""Emotion Detection's inference core: faces in any photo -> calibrated probabilities over 8 emotions.

    from emotion import Predictor
    result = Predictor.from_pretrained().predict("photo.jpg")   # or "hf-hub:org/name", "local-dir:/path"
"""
from .errors import EmotionError, ImageTooLargeError, UnsupportedImageError
from .labels import LABELS, canonical
from .predict import FacePrediction, ImagePrediction, Predictor, default_source, shipped_models

__all__ = ["EmotionError", "ImageTooLargeError", "UnsupportedImageError", "LABELS", "canonical", "Predictor",
           "FacePrediction", "ImagePrediction", "default_source", "shipped_models"]
