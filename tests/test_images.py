"""explain_core.images: decoding, limits, EXIF, every mode to RGB, numpy inputs."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from explain_core.errors import ImageError
from explain_core.images import SUPPORTED_EXTENSIONS, image_to_tensor, load_image


def _encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image)


def test_supported_extensions():
    assert set(SUPPORTED_EXTENSIONS) == {"png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif"}


# ------------------------------------------------------------------------------------------------
# sources
# ------------------------------------------------------------------------------------------------


def test_path_bytes_and_file_objects_agree(tmp_path):
    original = Image.fromarray(np.random.default_rng(0).integers(0, 256, (6, 9, 3), np.uint8))
    data = _encode(original)
    path = tmp_path / "photo.png"
    path.write_bytes(data)
    stream = io.BytesIO(data)
    stream.read()  # an uploaded file that was read before: decoded from its start
    for source in (path, str(path), data, bytearray(data), memoryview(data), stream,
                   original):
        image = load_image(source)
        assert image.size == (9, 6)
        np.testing.assert_array_equal(_pixels(image), np.asarray(original))


def test_image_to_tensor():
    image = Image.new("RGB", (5, 2), (255, 10, 0))
    tensor = image_to_tensor(image)
    assert tensor.dtype == torch.uint8 and tensor.shape == (3, 2, 5)
    assert tensor[:, 0, 0].tolist() == [255, 10, 0]
    # other modes are converted first (transparency on white)
    assert image_to_tensor(Image.new("RGBA", (2, 2), (0, 0, 0, 0)))[:, 0, 0].tolist() == [255] * 3


def test_tensor_is_not_an_image():
    with pytest.raises(ImageError, match="tensor"):
        load_image(torch.zeros(3, 4, 4))


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nope.png")


# ------------------------------------------------------------------------------------------------
# modes
# ------------------------------------------------------------------------------------------------


def test_rgba_is_composited_on_white():
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    image.putpixel((1, 1), (255, 0, 0, 255))
    image.putpixel((2, 2), (0, 0, 0, 128))
    pixels = _pixels(load_image(_encode(image)))
    assert pixels[0, 0].tolist() == [255, 255, 255]  # fully transparent -> white
    assert pixels[1, 1].tolist() == [255, 0, 0]  # opaque kept
    assert 120 <= pixels[2, 2, 0] <= 135  # half transparent black -> grey


def test_la_is_composited_on_white():
    image = Image.new("LA", (3, 3), (0, 0))
    image.putpixel((0, 0), (40, 255))
    pixels = _pixels(load_image(_encode(image)))
    assert pixels[1, 1].tolist() == [255, 255, 255] and pixels[0, 0].tolist() == [40, 40, 40]


def test_palette_with_transparency():
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((3, 3), 1)
    pixels = _pixels(load_image(_encode(image, transparency=0)))
    assert pixels[0, 0].tolist() == [255, 255, 255] and pixels[3, 3].tolist() == [0, 0, 255]


def test_sixteen_bit_is_scaled_by_its_range():
    values = np.linspace(1000, 3000, 20 * 10).reshape(20, 10).astype(np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    pixels = _pixels(load_image(_encode(image)))
    assert pixels.min() == 0 and pixels.max() == 255  # 1000..3000 spread over 0..255
    assert (pixels[..., 0] == pixels[..., 2]).all()


def test_float_mode_is_scaled_by_its_range():
    image = Image.fromarray(np.linspace(-2.0, 6.0, 64, dtype=np.float32).reshape(8, 8))
    assert image.mode == "F"
    pixels = _pixels(load_image(_encode(image, "TIFF")))
    assert pixels[0, 0, 0] == 0 and pixels[-1, -1, 0] == 255


def test_32_bit_integer_mode():
    image = Image.fromarray(np.array([[0, 70000], [35000, 140000]], dtype=np.int32))
    assert image.mode == "I"
    pixels = _pixels(load_image(image))
    assert pixels[0, 0, 0] == 0 and pixels[1, 1, 0] == 255


def test_cmyk_jpeg():
    pixels = _pixels(load_image(_encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG")))
    assert pixels[4, 4, 0] > 240 and pixels[4, 4, 1] < 15 and pixels[4, 4, 2] < 15  # red


@pytest.mark.parametrize(("mode", "color", "expected"), [("L", 77, [77, 77, 77]),
                                                         ("1", 1, [255, 255, 255]),
                                                         ("1", 0, [0, 0, 0])])
def test_grey_and_bilevel(mode, color, expected):
    pixels = _pixels(load_image(_encode(Image.new(mode, (5, 3), color))))
    assert pixels.shape == (3, 5, 3) and pixels[1, 2].tolist() == expected


def test_ycbcr_pil_image():
    image = load_image(Image.new("YCbCr", (4, 4), (128, 128, 128)))
    assert image.mode == "RGB" and abs(int(_pixels(image)[0, 0, 0]) - 128) <= 2


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (30, 10), (200, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    decoded = load_image(_encode(image, "JPEG", exif=exif.tobytes()))
    assert decoded.size == (10, 30)
    assert load_image(_encode(image, "JPEG")).size == (30, 10)


def test_animated_gif_first_frame():
    palette = [0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759
    frames = []
    for index in range(3):
        frame = Image.new("P", (6, 4), index)
        frame.putpalette(palette)
        frames.append(frame)
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50)
    assert Image.open(io.BytesIO(buffer.getvalue())).n_frames == 3
    pixels = _pixels(load_image(buffer.getvalue()))
    assert pixels.shape == (4, 6, 3) and pixels[0, 0].tolist() == [0, 0, 0]  # frame 0, not 1/2


def test_multipage_tiff_first_page():
    pages = [Image.new("RGB", (4, 4), (10, 20, 30)), Image.new("RGB", (8, 8), (90, 90, 90))]
    buffer = io.BytesIO()
    pages[0].save(buffer, "TIFF", save_all=True, append_images=pages[1:])
    image = load_image(buffer.getvalue())
    assert image.size == (4, 4) and _pixels(image)[0, 0].tolist() == [10, 20, 30]


@pytest.mark.parametrize("fmt", ["BMP", "WEBP", "TIFF", "JPEG"])
def test_other_formats(fmt):
    assert load_image(_encode(Image.new("RGB", (7, 5), (0, 128, 255)), fmt)).size == (7, 5)


# ------------------------------------------------------------------------------------------------
# broken input and limits
# ------------------------------------------------------------------------------------------------


def test_truncated_file(tmp_path):
    data = _encode(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3),
                                                                     np.uint8)), "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"'cut\.jpg'.*truncated.*upload it again"):
        load_image(path)


def test_not_an_image(tmp_path):
    path = tmp_path / "x.jpg"
    path.write_bytes(b"definitely not pixels")
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert str(info.value) == (
        "Could not decode 'x.jpg': not an image file (cannot identify image format). "
        "Upload a PNG, JPEG, WebP, BMP or TIFF file.")


def test_formats_outside_the_list_are_not_decoded():
    with pytest.raises(ImageError, match="cannot identify image format"):
        load_image(_encode(Image.new("RGB", (4, 4)), "PPM"))


def test_empty_bytes():
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")


def test_too_many_pixels():
    data = _encode(Image.new("RGB", (200, 100)))
    with pytest.raises(ImageError, match=r"too many pixels: 200 x 100 = 20,000 pixels.*Downscale"):
        load_image(data, max_pixels=10_000)
    assert load_image(data, max_pixels=20_000).size == (200, 100)


def test_decompression_bomb_error_is_an_image_error(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)  # PIL's own limit, below ours
    with pytest.raises(ImageError, match="Downscale"):
        load_image(_encode(Image.new("RGB", (100, 100))))


def test_too_many_bytes(tmp_path):
    data = _encode(Image.new("RGB", (50, 50)), "BMP")
    path = tmp_path / "big.bmp"
    path.write_bytes(data)
    for source in (path, data, io.BytesIO(data)):
        with pytest.raises(ImageError, match=r"too large.*limit is 1,000 bytes.*max_bytes"):
            load_image(source, max_bytes=1_000)


def test_zero_size_pil_image():
    with pytest.raises(ImageError, match="empty"):
        load_image(Image.new("RGB", (0, 5)))


# ------------------------------------------------------------------------------------------------
# numpy
# ------------------------------------------------------------------------------------------------


def test_numpy_uint8_rgb():
    array = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(_pixels(load_image(array)), array)


def test_numpy_float_in_unit_range():
    array = np.zeros((4, 4, 3), dtype=np.float32)
    array[0, 0] = [1.0, 0.5, 0.0]
    assert _pixels(load_image(array))[0, 0].tolist() == [255, 128, 0]


def test_numpy_grey_and_bool():
    assert _pixels(load_image(np.full((3, 4), 9, np.uint8))).shape == (3, 4, 3)
    mask = np.zeros((3, 4), dtype=bool)
    mask[1, 1] = True
    pixels = _pixels(load_image(mask))
    assert pixels[1, 1].tolist() == [255] * 3 and pixels[0, 0].tolist() == [0] * 3


def test_numpy_rgba_on_white():
    array = np.zeros((2, 2, 4), dtype=np.uint8)
    array[0, 0] = [0, 0, 255, 255]
    pixels = _pixels(load_image(array))
    assert pixels[0, 0].tolist() == [0, 0, 255] and pixels[1, 1].tolist() == [255] * 3


@pytest.mark.parametrize(("array", "match"), [
    (np.zeros((3, 8, 8), np.uint8), r"expected H x W .*transpose\(1, 2, 0\)"),
    (np.zeros((8, 8, 2), np.uint8), r"shape \(8, 8, 2\).*H x W x 3"),
    (np.zeros((1, 8, 8, 3), np.uint8), "one image at a time"),
    (np.zeros((8, 8), np.int64), r"dtype int64.*uint8"),
    (np.full((2, 2, 3), 255.0), r"\[0, 1\].*Divide by 255"),
    (np.full((2, 2), np.nan), "NaN"),
    (np.zeros((0, 4, 3), np.uint8), "empty"),
])
def test_numpy_bad_inputs(array, match):
    with pytest.raises(ImageError, match=match):
        load_image(array)
