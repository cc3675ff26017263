"""Every image mode opens as 8-bit RGB with the right pixels; broken files raise BadImageError."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fastcls.data.images import BadImageError, Preprocessing, load_image, open_rgb


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as raw:
        assert raw.mode.startswith("I")
    rgb = np.asarray(open_rgb(tmp_path / "deep.png"))
    assert rgb.shape == (8, 8, 3)
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255
    assert 100 < rgb[4, 0, 0] < 160  # mid-ramp stays mid-grey instead of clipping to white


def test_palette_with_transparency_composites_on_white(tmp_path):
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.putpixel((0, 0), 1)
    image.info["transparency"] = 0
    image.save(tmp_path / "pal.png", transparency=0)
    rgb = np.asarray(open_rgb(tmp_path / "pal.png"))
    assert tuple(rgb[0, 0]) == (255, 0, 0)
    assert tuple(rgb[3, 3]) == (255, 255, 255)


def test_rgba_and_la_alpha_goes_to_white(tmp_path):
    Image.new("RGBA", (3, 3), (10, 20, 30, 0)).save(tmp_path / "clear.png")
    Image.new("LA", (3, 3), (0, 255)).save(tmp_path / "la.png")
    assert tuple(np.asarray(open_rgb(tmp_path / "clear.png"))[1, 1]) == (255, 255, 255)
    assert tuple(np.asarray(open_rgb(tmp_path / "la.png"))[1, 1]) == (0, 0, 0)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")  # pure red in CMYK
    r, g, b = np.asarray(open_rgb(tmp_path / "cmyk.jpg"))[4, 4].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (20, 10), (255, 0, 0))
    image.paste((0, 0, 255), (10, 0, 20, 10))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    image.save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    upright = np.asarray(open_rgb(tmp_path / "rot.jpg")).astype(int)
    assert upright.shape[:2] == (20, 10)  # height 20, width 10 after rotation
    assert upright[2, 5, 0] > 200 and upright[-3, 5, 2] > 200  # red on top, blue below


def test_truncated_and_non_images_raise(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    (tmp_path / "cut.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (tmp_path / "text.png").write_text("not an image")
    for name in ("cut.png", "text.png"):
        with pytest.raises(BadImageError):
            open_rgb(tmp_path / name)


def test_load_image_squish_and_crop_shapes(tmp_path):
    Image.new("RGB", (40, 20), (0, 128, 255)).save(tmp_path / "wide.png")
    squished = load_image(tmp_path / "wide.png", Preprocessing(size=16, resize="squish"))
    cropped = load_image(tmp_path / "wide.png", Preprocessing(size=16, resize="crop", crop_pct=0.875))
    assert squished.shape == cropped.shape == (3, 16, 16)
    assert squished.dtype == np.uint8 and tuple(squished[:, 8, 8]) == (0, 128, 255)
