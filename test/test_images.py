"""Image payload conversion for every supported encoding (no cv_bridge)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vla_ros.core.images import ENCODINGS, ImageError, decode_compressed, decode_raw, encode_raw, to_rgb


def _random_image(encoding, h, w, rng):
    dtype, channels = ENCODINGS[encoding]
    shape = (h, w) if channels == 1 else (h, w, channels)
    if np.issubdtype(dtype, np.floating):
        return rng.uniform(0.0, 10.0, shape).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_round_trip_every_encoding(encoding):
    rng = np.random.default_rng(0)
    image = _random_image(encoding, 7, 5, rng)
    h, w, step, data = encode_raw(encoding, image)
    decoded = decode_raw(encoding, h, w, step, False, data)
    assert decoded.dtype == image.dtype and np.array_equal(decoded, image)


def test_16uc1_keeps_full_range_and_honours_padding_and_endianness():
    depth = np.array([[0, 1, 255, 256], [4095, 32768, 65534, 65535]], dtype=np.uint16)
    # big-endian rows padded to 10 bytes (8 used): a naive reshape would shear / byte-swap the values
    rows = [depth[r].astype(">u2").tobytes() + b"\xee\xee" for r in range(2)]
    decoded = decode_raw("16UC1", 2, 4, 10, True, b"".join(rows))
    assert decoded.dtype == np.uint16 and np.array_equal(decoded, depth)


@given(st.integers(1, 9), st.integers(1, 9), st.integers(0, 7))
def test_padded_rows_of_rgb8(h, w, pad):
    rng = np.random.default_rng(h * 100 + w)
    image = _random_image("rgb8", h, w, rng)
    step = w * 3 + pad
    data = b"".join(image[r].tobytes() + bytes(pad) for r in range(h))
    assert np.array_equal(decode_raw("rgb8", h, w, step, False, data), image)


def test_colour_conversions_to_rgb():
    rgb = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3)
    assert np.array_equal(to_rgb("bgr8", rgb[..., ::-1]), rgb)
    rgba = np.concatenate([rgb, np.full((2, 2, 1), 9, np.uint8)], axis=2)
    assert np.array_equal(to_rgb("rgba8", rgba), rgb)
    assert np.array_equal(to_rgb("bgra8", rgba[..., [2, 1, 0, 3]]), rgb)
    assert np.array_equal(to_rgb("mono8", rgb[..., 0])[..., 2], rgb[..., 0])
    with pytest.raises(ImageError, match="not a colour image"):
        to_rgb("32FC1", np.zeros((2, 2), np.float32))


def test_bad_images_name_the_source():
    with pytest.raises(ImageError, match=r"/cam: unsupported encoding 'yuv422'"):
        decode_raw("yuv422", 2, 2, 4, False, bytes(8), source="/cam")
    with pytest.raises(ImageError, match=r"/cam: inconsistent rgb8 image 4x4"):
        decode_raw("rgb8", 4, 4, 12, False, bytes(10), source="/cam")
    with pytest.raises(ImageError, match="cannot decode compressed"):
        decode_compressed("jpeg", b"not a jpeg", source="/cam")


def test_compressed_jpeg_and_png_decode_to_rgb():
    import cv2

    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200  # red
    for ext in (".png", ".jpg"):
        ok, buf = cv2.imencode(ext, rgb[..., ::-1])
        assert ok
        out = decode_compressed(ext[1:], buf.tobytes())
        assert out.shape == (8, 8, 3) and abs(int(out[..., 0].mean()) - 200) < 5 and out[..., 2].mean() < 5
