"""load_image: every input a user may send becomes an upright RGB image, or an error that says what to send."""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile
from skimage import data

from emotion import images
from emotion.errors import EmotionError, ImageTooLargeError, UnsupportedImageError
from emotion.images import load_image


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height but holds no pixels: only the header can be read."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"\x78\x9c")


@pytest.mark.parametrize("kind", ["str", "path", "bytes", "file", "pil", "array"])
def test_every_source_type_gives_the_same_rgb_pixels(kind, astronaut, tmp_path):
    path = tmp_path / "a.png"
    astronaut.save(path)
    if kind in ("file", "pil"):
        with path.open("rb") as f:
            img = load_image(f if kind == "file" else Image.open(f))
    else:
        img = load_image({"str": str(path), "path": path, "bytes": path.read_bytes(),
                          "array": np.asarray(astronaut)}[kind])
    assert img.mode == "RGB" and img.size == (512, 512)
    assert np.array_equal(np.asarray(img), np.asarray(astronaut))


def test_non_seekable_upload_stream_is_read(astronaut):
    buf = io.BytesIO()
    astronaut.save(buf, "JPEG")

    class Stream(io.RawIOBase):  # like a socket: read() only
        def __init__(self, b):
            self._b = io.BytesIO(b)

        def readable(self):
            return True

        def readinto(self, out):
            return self._b.readinto(out)

    assert load_image(Stream(buf.getvalue())).size == (512, 512)


@pytest.mark.parametrize("orientation,rotate", [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270),
                                                (3, Image.Transpose.ROTATE_180)])
def test_exif_orientation_is_applied(orientation, rotate, astronaut, tmp_path):
    # A camera stores the pixels sideways and says so in EXIF; the viewer (and we) must turn them upright.
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    astronaut.transpose(rotate).save(path, quality=95, exif=exif)
    img = load_image(path)
    assert img.size == (512, 512)
    assert np.abs(np.asarray(img, float) - np.asarray(astronaut, float)).mean() < 4


def test_transparent_pixels_become_white_not_black():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:4, :, :] = (255, 0, 0, 255)  # top half opaque red, bottom half fully transparent
    img = load_image(rgba)
    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == (255, 0, 0) and img.getpixel((0, 7)) == (255, 255, 255)


def test_palette_la_cmyk_and_gray_files_load_as_rgb(tmp_path):
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png", transparency=0)
    Image.new("LA", (4, 4), (90, 0)).save(tmp_path / "la.png")
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    Image.new("L", (4, 4), 77).save(tmp_path / "gray.png")
    Image.new("1", (4, 4), 1).save(tmp_path / "bw.bmp")
    expected = {"p.png": (10, 200, 30), "la.png": (255, 255, 255), "gray.png": (77, 77, 77),
                "bw.bmp": (255, 255, 255)}
    for name in ["p.png", "la.png", "cmyk.jpg", "gray.png", "bw.bmp"]:
        img = load_image(tmp_path / name)
        assert img.mode == "RGB", name
        if name in expected:
            assert img.getpixel((1, 1)) == expected[name], name
    r, g, b = load_image(tmp_path / "cmyk.jpg").getpixel((1, 1))
    assert r > 200 and g < 60 and b < 60  # CMYK (0, 255, 255, 0) is red


def _row(img: Image.Image) -> list[int]:
    return np.asarray(img)[0, :, 0].tolist()


def test_16_bit_and_float_pixels_are_scaled_not_clipped(tmp_path):
    arr16 = np.array([[0, 32896, 65535]], np.uint16)
    Image.fromarray(arr16).save(tmp_path / "16.png")  # a 16-bit grayscale PNG, as scanners write
    for src in (tmp_path / "16.png", arr16):
        assert _row(load_image(src)) == [0, 128, 255]
    assert _row(load_image(np.array([[0.0, 0.5, 1.0]]))) == [0, 128, 255]
    assert _row(load_image(np.array([[0.0, 128.0, 255.0]], np.float32))) == [0, 128, 255]


def test_animated_gif_gives_the_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    img = load_image(tmp_path / "anim.gif")
    assert img.mode == "RGB" and img.getpixel((4, 4)) == (255, 0, 0)


def test_a_text_file_is_refused_with_the_formats_to_send(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("this is not a picture")
    with pytest.raises(UnsupportedImageError, match="could not read an image from .*notes.txt.*send a JPEG, PNG"):
        load_image(path)


def test_empty_file_and_empty_bytes_are_refused(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    for src in (tmp_path / "empty.jpg", b""):
        with pytest.raises(UnsupportedImageError, match="send a JPEG"):
            load_image(src)


def test_truncated_jpeg_is_refused_not_padded_with_grey(astronaut, tmp_path):
    buf = io.BytesIO()
    astronaut.save(buf, "JPEG", quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    with pytest.raises(UnsupportedImageError, match="damaged or incomplete.*send a JPEG"):
        load_image(path)


def test_missing_path_and_wrong_type_say_what_to_send(tmp_path):
    with pytest.raises(EmotionError, match="no file at .*check the path"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(EmotionError, match="takes a path, bytes, a file object, a PIL image or a numpy array"):
        load_image(42)
    with pytest.raises(EmotionError, match="channels go last"):
        load_image(np.zeros((3, 32, 32), np.uint8))


def test_oversize_image_is_refused_from_its_header_before_decoding():
    # Only the header exists: if we tried to decode, this would fail as "damaged", not as "too large".
    with pytest.raises(ImageTooLargeError, match="10000x5000 .*limit of 40 megapixels.*send a smaller image"):
        load_image(_png_header(10_000, 5_000))
    # Above twice Pillow's own bomb limit, Image.open itself raises; that must still be a 413, not a crash.
    with pytest.raises(ImageTooLargeError, match="send a smaller image"):
        load_image(_png_header(20_000, 20_000))
    assert ImageTooLargeError.status == 413


def test_oversize_arrays_and_pil_images_are_refused(monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    with pytest.raises(ImageTooLargeError):
        load_image(np.zeros((20, 20), np.uint8))
    with pytest.raises(ImageTooLargeError):
        load_image(Image.new("RGB", (20, 20)))


def test_pillow_refuses_bombs_at_our_limit_for_every_decoder():
    # Gradio and any other library in the process decode with Pillow: its bomb check must be at our 40 MP.
    assert Image.MAX_IMAGE_PIXELS == images.MAX_PIXELS


def test_a_transparent_photo_decodes_without_full_size_rgba_copies():
    """A 20 MP RGBA PNG (80 KB on disk) may cost its decoded pixels plus the RGB result, not 4-6 full copies."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import resource, sys; from conftest import flat_png; from emotion.images import load_image\n"
        "data = flat_png(4000, 5000)\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "img = load_image(data); assert img.mode == 'RGB' and img.getpixel((0, 0)) != (255, 255, 255)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)\n")
    tests = Path(__file__).resolve().parent
    out = subprocess.run([sys.executable, "-c", code], cwd=tests.parent, capture_output=True, text=True,
                         env={"PYTHONPATH": f"{tests}:{tests.parent}", "OMP_NUM_THREADS": "1"}, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    full_copy = 4000 * 5000 * 4  # Pillow keeps RGB and RGBA alike in 4 bytes per pixel
    assert int(out.stdout) < 2.5 * full_copy, f"peak {int(out.stdout) / 2**20:.0f} MB over the baseline"


def test_an_image_load_image_decoded_is_passed_on_as_it_is_and_a_changed_one_is_not(astronaut, monkeypatch):
    buf = io.BytesIO()
    astronaut.save(buf, format="PNG")
    img = load_image(buf.getvalue())
    passes = []
    real = images._finish
    monkeypatch.setattr(images, "_finish", lambda im, name: passes.append(name) or real(im, name))
    assert load_image(img) is img and load_image(img.copy()).size == img.size and passes == []
    assert load_image(img.convert("RGBA")).mode == "RGB" and load_image(img.crop((0, 0, 10, 10))).size == (10, 10)
    assert len(passes) == 2  # another mode, another size: checked and converted again


def _big_jpeg(astronaut, size=(4000, 3000), orientation: int = 1) -> bytes:
    canvas = Image.new("RGB", size, (90, 120, 150))
    canvas.paste(astronaut.resize((1600, 1600)), (1500, 900))  # her face ~290 px
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    canvas.save(buf, "JPEG", quality=90, exif=exif)
    return buf.getvalue()


@pytest.mark.parametrize("min_side,side", [(1000, 1000), (600, 1000), (400, 500), (2100, 4000), (3000, 4000)])
def test_a_large_jpeg_decodes_at_the_scale_the_caller_needs(astronaut, min_side, side):
    """Pillow's draft picks the smallest DCT scale (1/2, 1/4, 1/8) that keeps min_side; file_pixels maps back."""
    img = load_image(_big_jpeg(astronaut), min_side=min_side)
    assert max(img.size) == side and img.mode == "RGB"
    assert images.file_pixels(img) == ((4000, 3000), (4000 / img.width, 3000 / img.height))


def test_reduced_decoding_keeps_exif_orientation_limits_and_other_formats_whole(astronaut, tmp_path):
    turned = load_image(_big_jpeg(astronaut, orientation=6), min_side=lambda long_side: long_side // 4)
    assert turned.size == (750, 1000) and images.file_pixels(turned)[0] == (3000, 4000)
    png = tmp_path / "big.png"
    Image.new("RGB", (3000, 2000)).save(png)
    assert load_image(png, min_side=500).size == (3000, 2000)  # only JPEG decodes at a reduced scale
    assert images.file_pixels(load_image(png))[1] == (1.0, 1.0)
    with pytest.raises(ImageTooLargeError):  # the header's size is checked, not the reduced one
        load_image(_big_jpeg(astronaut, size=(8000, 6000)), min_side=500)


def test_the_header_says_what_a_reduced_decode_will_give_without_decoding(astronaut, tmp_path, monkeypatch):
    """planned_size: the file's upright size and the size load_image will decode it at, from the header alone (the
    finer decode a small face needs starts from it, beside the reduced one: emotion/faces.py)."""
    for data, min_side in ((_big_jpeg(astronaut), 1000), (_big_jpeg(astronaut), 400),
                           (_big_jpeg(astronaut, orientation=6), lambda long_side: long_side // 4)):
        path = tmp_path / "photo.jpg"
        path.write_bytes(data)
        img = load_image(data, min_side=min_side)
        assert images.planned_size(data, min_side) == images.planned_size(path, min_side) == (
            images.file_pixels(img)[0], img.size)
    png = tmp_path / "big.png"
    Image.new("RGB", (3000, 2000)).save(png)
    whole = [(_big_jpeg(astronaut), 3000), (png, 500), (b"not an image", 500), (tmp_path / "missing.jpg", 500),
             (Image.new("RGB", (9, 9)), 5), (_big_jpeg(astronaut, size=(8000, 6000)), 500)]  # the last: refused
    data = _big_jpeg(astronaut)
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("planned_size decoded pixels"))
    assert images.planned_size(data, 1000) == ((4000, 3000), (1000, 750))
    for src, min_side in whole:  # decoded whole, or refused by load_image: nothing to plan
        assert images.planned_size(src, min_side) is None


def test_a_photo_decoded_at_a_reduced_scale_gives_its_faces_in_the_file_pixels(astronaut, tiny_model):
    """The 12 MP photo is decoded at 1/4 (its face ~72 px there, enough for the crop); the answer's boxes and size
    are the file's, as when it is decoded whole."""
    from emotion import Predictor
    from emotion.faces import FaceDetector, decode_and_find

    jpeg = _big_jpeg(astronaut)
    img, found = decode_and_find(jpeg, FaceDetector())
    assert images.file_pixels(img)[1] == (4.0, 4.0) and len(found.faces) == 1
    predictor = Predictor.from_pretrained(f"local-dir:{tiny_model}")
    reduced, whole = predictor.predict(jpeg), predictor.predict(Image.open(io.BytesIO(jpeg)))
    assert reduced.image_size == whole.image_size == (4000, 3000) and len(reduced.faces) == len(whole.faces) == 1
    a, b = reduced.faces[0].box, whole.faces[0].box
    assert max(abs(u - v) for u, v in zip(a, b)) < 0.05 * b[2]  # within 5% of the face
    assert reduced.faces[0].keypoints[0][0] == pytest.approx(whole.faces[0].keypoints[0][0], abs=0.05 * b[2])


def test_a_small_face_in_a_reduced_decode_is_cut_from_a_finer_one(astronaut):
    from emotion.faces import MIN_CROP_FACE, FaceDetector, decode_and_find

    canvas = Image.new("RGB", (4000, 3000), (90, 120, 150))
    canvas.paste(astronaut.resize((700, 700)), (1500, 900))  # her face ~130 px: ~32 px at 1/4 scale
    buf = io.BytesIO()
    canvas.save(buf, "JPEG", quality=90)
    img, found = decode_and_find(io.BytesIO(buf.getvalue()), FaceDetector())  # a file object: read once
    assert len(found.faces) == 1 and max(found.faces[0].box[2:]) >= MIN_CROP_FACE
    assert images.file_pixels(img)[1][0] < 4
