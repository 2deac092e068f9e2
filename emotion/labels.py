"""The canonical 8 emotions, and the names and integer orders other data sets use for them."""
from __future__ import annotations

from typing import Iterable

from .errors import EmotionError

LABELS: tuple[str, ...] = ("anger", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise")
LABEL2ID = {name: i for i, name in enumerate(LABELS)}

# Names seen in FER2013, FER+, AffectNet, RAF-DB, CK+, ExpW, the `fer` package, DeepFace, HSEmotion...
ALIASES: dict[str, str] = {
    "anger": "anger", "angry": "anger", "mad": "anger",
    "contempt": "contempt", "contemptuous": "contempt",
    "disgust": "disgust", "disgusted": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "scared": "fear",
    "happy": "happy", "happiness": "happy", "joy": "happy", "happily": "happy",
    "neutral": "neutral", "neutrality": "neutral", "calm": "neutral",
    "sad": "sad", "sadness": "sad",
    "surprise": "surprise", "surprised": "surprise",
}

# Integer orders of well-known data sets, index -> canonical name.
ORDERS: dict[str, tuple[str, ...]] = {
    # Kaggle fer2013.csv `emotion` column: 0=Angry 1=Disgust 2=Fear 3=Happy 4=Sad 5=Surprise 6=Neutral
    "fer2013": ("anger", "disgust", "fear", "happy", "sad", "surprise", "neutral"),
    # FERPlus fer2013new.csv vote columns (emotions only; unknown/NF dropped)
    "ferplus": ("neutral", "happy", "surprise", "sad", "anger", "disgust", "fear", "contempt"),
    # AffectNet expression ids 0..7
    "affectnet": ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt"),
    # RAF-DB basic emotions 1..7, stored 0-based
    "rafdb": ("surprise", "fear", "disgust", "happy", "sad", "anger", "neutral"),
    # This project's own order (and ../shared/data/ferplus `label` ClassLabel)
    "canonical": LABELS,
}


def canonical(name: str) -> str:
    """Map a data set's emotion name (any case, e.g. 'Angry', 'happiness') to one of LABELS."""
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    if key not in ALIASES:
        known = ", ".join(sorted(ALIASES))
        raise EmotionError(f"unknown emotion label {name!r}; known names: {known}")
    return ALIASES[key]


def from_index(index: int, order: str = "canonical") -> str:
    """Map an integer label in a named data set order ('fer2013', 'ferplus', 'affectnet', ...) to a name."""
    if order not in ORDERS:
        raise EmotionError(f"unknown label order {order!r}; choose one of: {', '.join(ORDERS)}")
    names = ORDERS[order]
    if not 0 <= int(index) < len(names):
        raise EmotionError(f"label {index} is out of range for order {order!r} (0..{len(names) - 1})")
    return names[int(index)]


def mapping_to_canonical(names: Iterable[str]) -> list[int]:
    """For a data set's class names, the canonical index of each (e.g. FER2013's 7 names -> 7 indices)."""
    return [LABEL2ID[canonical(n)] for n in names]
