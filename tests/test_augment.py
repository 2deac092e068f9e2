"""Framing augmentation: the serving crop exactly without a random draw, and the configured tight-to-loose range."""
import numpy as np
import pytest
from PIL import Image

from trainer import augment
from trainer.config import ConfigError, TrainConfig


def photo_with_context(context: float, side: int = 100) -> Image.Image:
    """A crop holding `context` extra margin per side around a `side`-px serving crop (a gradient, so crops differ)."""
    n = round(side * (1 + 2 * context))
    return Image.fromarray(np.add.outer(np.arange(n), np.arange(n)).astype(np.uint8))


def test_without_a_draw_the_serving_crop_comes_back_exactly():
    img = photo_with_context(0.2)
    crop = augment.reframe(img, 0.2, None, scale_min=0.75, scale_max=1.4, shift=0.1)
    assert crop.size == (100, 100)
    assert np.array_equal(np.asarray(crop), np.asarray(img)[20:120, 20:120])


@pytest.mark.parametrize("scale_max", [1.2, 1.4])
def test_crops_range_from_tight_to_the_configured_loosest(scale_max):
    img = photo_with_context(0.2)
    rng = np.random.default_rng(0)
    sides = np.array([augment.reframe(img, 0.2, rng, scale_min=0.75, scale_max=scale_max).width / 100 for _ in range(400)])
    assert sides.min() == pytest.approx(np.sqrt(0.75), abs=0.03)  # tightest: 75% of the serving crop's area
    assert sides.max() == pytest.approx(scale_max, abs=0.03)
    assert sides.max() <= scale_max + 0.01


def test_the_centre_moves_by_at_most_the_configured_shift():
    img = photo_with_context(0.2)
    for shift in (0.0, 0.1):
        rng = np.random.default_rng(1)
        corners = []
        for _ in range(200):
            crop = np.asarray(augment.reframe(img, 0.2, rng, shift=shift), dtype=int)  # side fixed at 100
            corners.append(crop[0, 0] - 40)  # the gradient's value at the corner: offset x + offset y from centred
        corners = np.array(corners)
        assert np.abs(corners).max() <= round(2 * shift * 100) + 2
        assert np.abs(corners).max() >= (round(1.5 * shift * 100) if shift else 0)


@pytest.mark.parametrize("field, value", [("scale_max", 0.9), ("scale_max", 3), ("shift", -0.1), ("shift", 0.5)])
def test_framing_ranges_outside_the_sensible_are_refused(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value})


def test_a_crop_that_is_not_square_keeps_its_aspect_as_serving_squeezes_it():
    # SFEW's film faces are 143x181 crops served whole (squeezed to the square input): a re-framed window must keep
    # that aspect, not cut a square from the middle that serving never shows the model.
    img = Image.fromarray(np.add.outer(np.arange(181), np.arange(143)).astype(np.uint8))
    rng = np.random.default_rng(0)
    assert np.array_equal(np.asarray(augment.reframe(img, 0.0, rng, shift=0.0)), np.asarray(img))
    for _ in range(200):
        crop = augment.reframe(img, 0.0, rng, scale_min=0.75, scale_max=1.4, shift=0.1)
        assert crop.height / crop.width == pytest.approx(181 / 143, abs=0.02)
        assert np.sqrt(0.75) - 0.02 <= crop.width / 143 <= 1.4 + 0.02
