"""Image decoding: odd modes must work, broken files must fail with a one-line message."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from scaledet.data.images import ImageError, load_image, to_rgb_tensor


def _noise_rgb(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _assert_one_line(err: pytest.ExceptionInfo, must_contain: str) -> None:
    message = str(err.value)
    assert "\n" not in message
    assert must_contain in message


def test_rgb_png_round_trips_exactly(tmp_path):
    pixels = _noise_rgb()
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert image.dtype == torch.uint8 and image.shape == (3, 48, 64)
    assert torch.equal(image, torch.from_numpy(pixels).permute(2, 0, 1))


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(ImageError) as err:
        load_image(tmp_path / "nope.jpg")
    _assert_one_line(err, "nope.jpg")
    assert "not found" in str(err.value)


def test_truncated_jpeg_is_detected(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(_noise_rgb(128, 128)).save(buf, format="JPEG", quality=95)
    data = buf.getvalue()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as err:
        load_image(tmp_path / "cut.jpg")
    _assert_one_line(err, "cut.jpg")
    assert "truncated" in str(err.value)


def test_non_image_file_is_reported(tmp_path):
    (tmp_path / "notes.jpg").write_text("this is not a picture")
    with pytest.raises(ImageError) as err:
        load_image(tmp_path / "notes.jpg")
    _assert_one_line(err, "notes.jpg")
    assert isinstance(err.value, ValueError)


def test_grayscale_png_becomes_three_equal_channels(tmp_path):
    gray = np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) % 256
    Image.fromarray(gray.astype(np.uint8), "L").save(tmp_path / "g.png")
    image = load_image(tmp_path / "g.png")
    assert image.shape == (3, 48, 64)
    for c in range(3):
        assert torch.equal(image[c], torch.from_numpy(gray.astype(np.uint8)))


def test_rgba_png_is_composited_on_black(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[0, :, 3] = 255
    rgba[1, 0, 3] = 0
    rgba[1, 1, 3] = 128
    rgba[1, 2, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert image.shape == (3, 2, 3)
    assert image[:, 0, 0].tolist() == [200, 100, 50]
    assert image[:, 1, 0].tolist() == [0, 0, 0]
    assert image[:, 1, 1].tolist() == [100, 50, 25]


def test_palette_png_with_transparency(tmp_path):
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    img.putpixel((0, 0), 0)
    img.info["transparency"] = 0
    img.save(tmp_path / "p.png", transparency=0)
    image = load_image(tmp_path / "p.png")
    assert image[:, 1, 1].tolist() == [10, 200, 30]
    assert image[:, 0, 0].tolist() == [0, 0, 0]


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 256, 32768, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    image = load_image(tmp_path / "deep.png")
    assert image.shape == (3, 1, 4)
    assert image[0].tolist() == [[0, 1, 128, 255]]
    assert torch.equal(image[0], image[2])


def test_exif_rotation_is_applied(tmp_path):
    # Stored 60 wide x 30 high, left half red, right half blue; orientation 6 means the viewer
    # rotates it 90 degrees clockwise, so the red half ends on top of a 30 wide x 60 high image.
    pixels = np.zeros((30, 60, 3), np.uint8)
    pixels[:, :30] = (255, 0, 0)
    pixels[:, 30:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    image = load_image(tmp_path / "rot.jpg").int()
    assert image.shape == (3, 60, 30)
    top, bottom = image[:, 5:25], image[:, 35:55]
    assert (top[0] > 200).all() and (top[2] < 60).all()
    assert (bottom[2] > 200).all() and (bottom[0] < 60).all()


def test_to_rgb_tensor_accepts_common_inputs(tmp_path):
    pixels = _noise_rgb(8, 10)
    expected = torch.from_numpy(pixels).permute(2, 0, 1)
    assert torch.equal(to_rgb_tensor(pixels), expected)
    assert torch.equal(to_rgb_tensor(Image.fromarray(pixels)), expected)
    assert torch.equal(to_rgb_tensor(expected.float() / 255.0), expected)
    assert torch.equal(to_rgb_tensor(pixels.astype(np.float32)), expected)  # 0..255 floats
    gray = pixels[..., 0]
    out = to_rgb_tensor(gray)
    assert out.shape == (3, 8, 10) and torch.equal(out[1], torch.from_numpy(gray))
    Image.fromarray(pixels).save(tmp_path / "x.png")
    assert torch.equal(to_rgb_tensor(str(tmp_path / "x.png")), expected)
    with pytest.raises(ImageError):
        to_rgb_tensor(np.zeros((8, 10, 7), np.uint8))
    with pytest.raises(TypeError):
        to_rgb_tensor([1, 2, 3])
