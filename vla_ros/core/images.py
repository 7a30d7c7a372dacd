"""sensor_msgs/Image and CompressedImage payloads <-> numpy, without cv_bridge.

The registry's `cv-bridge` is a stale ROS 1 port that silently corrupts 16UC1, and ROS 2's cv_bridge is not
installable pip-only; the conversion is a reshape with the row stride (`step`) and endianness honoured, so it is
done here with numpy on the message fields (used by the policy node and by bag replay alike).
"""

from __future__ import annotations

import numpy as np

from vla_ros.core.errors import VlaRosError

# encoding -> (numpy dtype, channels)
ENCODINGS = {
    "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3),
    "rgba8": (np.uint8, 4),
    "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1),
    "mono16": (np.uint16, 1),
    "16UC1": (np.uint16, 1),
    "32FC1": (np.float32, 1),
}


class ImageError(VlaRosError):
    """An image message that cannot be used (unsupported encoding, inconsistent size, wrong resolution)."""


def decode_raw(encoding: str, height: int, width: int, step: int, is_bigendian: bool, data: bytes | memoryview,
               source: str = "image", copy: bool = True) -> np.ndarray:
    """Raw sensor_msgs/Image fields -> array (H, W, C) for colour, (H, W) for mono / depth. Copies the data, unless
    `copy` is False and no conversion is needed: then a view of `data` (read-only if `data` is)."""
    if encoding not in ENCODINGS:
        raise ImageError(f"{source}: unsupported encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}")
    dtype, channels = ENCODINGS[encoding]
    dtype = np.dtype(dtype).newbyteorder(">" if is_bigendian else "<")
    row_bytes = width * channels * dtype.itemsize
    if height <= 0 or width <= 0 or step < row_bytes or len(data) < step * height:
        raise ImageError(
            f"{source}: inconsistent {encoding} image {width}x{height}: step {step} (row needs {row_bytes}), "
            f"{len(data)} bytes of data (needs {step * height})"
        )
    rows = np.frombuffer(data, dtype=np.uint8, count=step * height).reshape(height, step)[:, :row_bytes]
    pixels = rows.view(dtype).reshape(height, width, channels) if channels > 1 else rows.view(dtype).reshape(height, width)
    return pixels.astype(dtype.newbyteorder("="), copy=copy)


def to_rgb(encoding: str, pixels: np.ndarray) -> np.ndarray:
    """A decoded colour / mono8 image -> contiguous RGB uint8 (H, W, 3). Depth encodings are not colour."""
    if encoding == "rgb8":
        return np.ascontiguousarray(pixels)
    if encoding == "bgr8":
        return np.ascontiguousarray(pixels[..., ::-1])
    if encoding == "rgba8":
        return np.ascontiguousarray(pixels[..., :3])
    if encoding == "bgra8":
        return np.ascontiguousarray(pixels[..., 2::-1])
    if encoding == "mono8":
        return np.repeat(pixels[..., None], 3, axis=2)
    raise ImageError(f"encoding {encoding!r} is depth / 16-bit, not a colour image")


def encode_raw(encoding: str, pixels: np.ndarray) -> tuple[int, int, int, bytes]:
    """Array -> (height, width, step, data) for a little-endian sensor_msgs/Image of `encoding`."""
    if encoding not in ENCODINGS:
        raise ImageError(f"unsupported encoding {encoding!r}")
    dtype, channels = ENCODINGS[encoding]
    pixels = np.ascontiguousarray(pixels, dtype=np.dtype(dtype).newbyteorder("<"))
    height, width = pixels.shape[:2]
    if (pixels.ndim == 2 and channels != 1) or (pixels.ndim == 3 and pixels.shape[2] != channels):
        raise ImageError(f"{encoding}: expected {channels} channel(s), got array of shape {pixels.shape}")
    return height, width, width * channels * pixels.dtype.itemsize, pixels.tobytes()


def decode_compressed(format_: str, data: bytes | memoryview, source: str = "image") -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg / png) -> RGB uint8 (H, W, 3)."""
    import cv2

    buffer = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
    if image is None:
        raise ImageError(f"{source}: cannot decode compressed image (format {format_!r}, {buffer.size} bytes)")
    # OpenCV decodes to BGR regardless of the format string ("rgb8; jpeg compressed bgr8" etc.).
    return np.ascontiguousarray(image[..., ::-1])
