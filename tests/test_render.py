"""The annotated photo as people see it: chips that stay legible on a phone, boxes where the faces are."""
from __future__ import annotations

from PIL import Image

from webapp import render

PHONE_WIDTH = 324  # CSS px the "Faces" image is shown at on a 390 px wide phone (measured in Chromium)


def sad_face(x: int, y: int, w: int, h: int) -> dict:
    return {"box": {"x": x, "y": y, "w": w, "h": h}, "emotion": "sad", "confidence": 0.87, "uncertain": False}


def chip_top(out: Image.Image, x: int, y: int) -> int:
    """The first row of the chip drawn above the box whose top-left corner is (x, y): its colour, down to the box."""
    fill = Image.new("RGB", (1, 1), render.COLOURS["sad"]).getpixel((0, 0))
    top = y
    while top > 0 and out.getpixel((x + 1, top - 1)) == fill:
        top -= 1
    return top


def test_a_phone_photos_chip_is_legible_when_the_image_is_shown_phone_wide():
    photo = Image.new("RGB", (4000, 3000), (128, 128, 128))  # a phone camera's 12 MP
    out = render.preview(photo, [sad_face(1500, 1000, 800, 800)])
    scale = min(1, render.PREVIEW_MAX_SIDE / 4000)
    x, y = round(1500 * scale), round(1000 * scale)
    shown = (y - chip_top(out, x, y)) * PHONE_WIDTH / out.width
    assert shown >= 10.5, f"the label chip is {shown:.1f} px tall on a phone"


def test_a_crowd_of_small_faces_gets_numbers_not_captions_over_the_photo():
    photo = Image.new("RGB", (1600, 1000), (128, 128, 128))
    faces = [sad_face(40 + 150 * i, 500, 60, 60) for i in range(10)]
    out = render.annotate(photo, faces)
    fill = Image.new("RGB", (1, 1), render.COLOURS["sad"]).getpixel((0, 0))
    for face in faces:
        x, y = face["box"]["x"], face["box"]["y"]
        row = y - (y - chip_top(out, x, y)) // 2  # the middle of the chip
        right = x
        while right + 1 < out.width and out.getpixel((right + 1, row)) != (128, 128, 128):
            right += 1
        assert right - x <= 2 * face["box"]["w"] + 10, "a caption chip covers the neighbouring faces"
        assert out.getpixel((x + 1, row)) == fill


def test_a_photo_decoded_at_reduced_scale_gets_its_boxes_where_the_faces_are():
    """REST and the UI decode a large JPEG at the size the search needs (1/4 of a 12 MP photo): the boxes stay in the
    file's pixels and the preview maps them onto the smaller image, without enlarging it."""
    import io

    from emotion.images import file_pixels, load_image

    buf = io.BytesIO()
    Image.new("RGB", (4000, 3000), (128, 128, 128)).save(buf, "JPEG")
    img = load_image(buf.getvalue(), min_side=lambda side: 960)
    assert img.size == (1000, 750) and file_pixels(img)[0] == (4000, 3000)
    out = render.preview(img, [sad_face(2000, 1500, 400, 400)])
    assert out.size == (1000, 750)
    fill = Image.new("RGB", (1, 1), render.COLOURS["sad"]).getpixel((0, 0))
    assert out.getpixel((500, 375 + 50)) == fill and out.getpixel((600 - 1, 375 + 50)) == fill  # its two sides
    assert out.getpixel((550, 425)) != fill  # and not inside
