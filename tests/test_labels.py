"""The label map: one canonical order, the names and integer orders other data sets use, and clear refusals."""
import pytest

from emotion.errors import EmotionError
from emotion.labels import LABEL2ID, LABELS, ORDERS, canonical, from_index, mapping_to_canonical


def test_canonical_order_is_the_ferplus_classlabel_order():
    assert LABELS == ("anger", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise")
    assert [LABEL2ID[name] for name in LABELS] == list(range(8))


@pytest.mark.parametrize("name,expected", [
    ("angry", "anger"), ("happiness", "happy"), ("surprised", "surprise"), ("sadness", "sad"),
    ("disgusted", "disgust"), ("fearful", "fear"),
    ("Angry", "anger"), ("HAPPINESS", "happy"), (" Surprised ", "surprise"), ("Neutral", "neutral"),
])
def test_aliases_map_to_canonical_names_in_any_case(name, expected):
    assert canonical(name) == expected


def test_every_canonical_name_maps_to_itself():
    assert [canonical(name) for name in LABELS] == list(LABELS)


@pytest.mark.parametrize("order,expected", [
    # Kaggle fer2013.csv: 0=Angry 1=Disgust 2=Fear 3=Happy 4=Sad 5=Surprise 6=Neutral
    ("fer2013", ["anger", "disgust", "fear", "happy", "sad", "surprise", "neutral"]),
    # FERPlus fer2013new.csv vote columns
    ("ferplus", ["neutral", "happy", "surprise", "sad", "anger", "disgust", "fear", "contempt"]),
    # AffectNet expression ids
    ("affectnet", ["neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt"]),
    # RAF-DB 1..7 stored 0-based
    ("rafdb", ["surprise", "fear", "disgust", "happy", "sad", "anger", "neutral"]),
    ("canonical", list(LABELS)),
])
def test_integer_orders_map_as_documented(order, expected):
    assert [from_index(i, order) for i in range(len(expected))] == expected
    with pytest.raises(EmotionError, match="out of range"):
        from_index(len(expected), order)


def test_fer2013_seven_class_names_map_to_seven_canonical_indices():
    names = ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"]
    assert mapping_to_canonical(names) == [0, 2, 3, 4, 6, 7, 5]
    assert "contempt" not in ORDERS["fer2013"]


def test_unknown_name_is_refused_with_the_known_names():
    with pytest.raises(EmotionError) as err:
        canonical("bored")
    message = str(err.value)
    assert "'bored'" in message
    for name in ("anger", "angry", "happiness", "surprised"):
        assert name in message


def test_unknown_order_is_refused_with_the_known_orders():
    with pytest.raises(EmotionError, match="fer2013.*ferplus.*affectnet.*rafdb"):
        from_index(0, "ckplus")
