"""sensor_msgs/Image and sensor_msgs/CompressedImage <-> RGB numpy arrays, without cv_bridge.

Pure numpy (OpenCV only to decode JPEG/PNG): the functions read the message's attributes (``height``, ``width``,
``step``, ``encoding``, ``is_bigendian``, ``data``; ``format`` and ``data`` for compressed images), so they work on
rclpy messages and on any object with those attributes, and import no ROS package.

Output images are ``uint8 [H, W, 3]`` RGB, C-contiguous. For ``rgb8`` without row padding the result is a view of
the message buffer (no copy). Every failure raises :class:`ImageConversionError` naming encoding, size and step.

YUV formats use ITU-R BT.601 "video range" (Y 16..235), as OpenCV's ``COLOR_YUV2RGB_*`` conversions and the ROS
camera drivers that produce them.
"""

from __future__ import annotations

import numpy as np


class ImageConversionError(ValueError):
    """The message cannot be converted to an RGB image (unsupported encoding, inconsistent size/step, truncated
    data, undecodable compressed data)."""


# encoding -> (channels in the buffer, bytes per channel)
_PACKED_ENCODINGS = {
    'rgb8': (3, 1), 'bgr8': (3, 1), 'rgba8': (4, 1), 'bgra8': (4, 1), 'mono8': (1, 1), '8uc1': (1, 1),
    'rgb16': (3, 2), 'bgr16': (3, 2), 'rgba16': (4, 2), 'bgra16': (4, 2), 'mono16': (1, 2),
}
# channel order of the colour encodings (index of R, G, B in the buffer)
_RGB_ORDER = {'rgb8': (0, 1, 2), 'rgba8': (0, 1, 2), 'bgr8': (2, 1, 0), 'bgra8': (2, 1, 0),
              'rgb16': (0, 1, 2), 'rgba16': (0, 1, 2), 'bgr16': (2, 1, 0), 'bgra16': (2, 1, 0)}
# 4:2:2 packed YUV: byte offsets of (Y0, U, Y1, V) inside each 4-byte macro-pixel
_YUV422_LAYOUTS = {'uyvy': (1, 0, 3, 2), 'yuv422': (1, 0, 3, 2),
                   'yuyv': (0, 1, 2, 3), 'yuv422_yuy2': (0, 1, 2, 3)}
# 4:2:0 semi-planar: order of the chroma bytes in the interleaved plane (U first for NV12, V first for NV21)
_NV_LAYOUTS = {'nv12': (0, 1), 'nv21': (1, 0)}

SUPPORTED_ENCODINGS = tuple(sorted(set(_PACKED_ENCODINGS) - {'8uc1'})) + tuple(sorted(_YUV422_LAYOUTS)) + \
    tuple(sorted(_NV_LAYOUTS)) + ('8UC1',)
SUPPORTED_COMPRESSED_FORMATS = ('jpeg', 'png')


def _describe(encoding, height, width, step, size) -> str:
    return f'encoding={encoding!r}, size={width}x{height} (WxH), step={step}, data={size} bytes'


def _rows(data, height: int, width: int, step: int, row_bytes: int, encoding: str) -> np.ndarray:
    """The image rows as a ``uint8 [height, row_bytes]`` view of ``data`` (row padding of ``step`` dropped)."""
    buffer = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1)
    if buffer.dtype != np.uint8:
        buffer = buffer.view(np.uint8)
    describe = _describe(encoding, height, width, step, buffer.size)
    if step < row_bytes:
        raise ImageConversionError(f'step is smaller than one row of pixels ({row_bytes} bytes): {describe}')
    needed = step * (height - 1) + row_bytes
    if buffer.size < needed:
        raise ImageConversionError(
            f'truncated image data: need at least {needed} bytes (step*height = {step * height}): {describe}')
    if buffer.size < step * height:       # last row without its padding: still complete
        buffer = np.concatenate([buffer[:needed], np.zeros(step * height - needed, np.uint8)])
    return buffer[:step * height].reshape(height, step)[:, :row_bytes]


def _yuv_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """BT.601 video-range YUV (uint8 arrays of equal shape) -> uint8 RGB ``[..., 3]``."""
    c = (y.astype(np.float32) - 16.0) * 1.164
    d = u.astype(np.float32) - 128.0
    e = v.astype(np.float32) - 128.0
    rgb = np.stack([c + 1.596 * e, c - 0.391 * d - 0.813 * e, c + 2.018 * d], axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def image_buffer_to_rgb(data, height: int, width: int, step: int, encoding: str,
                        is_bigendian: bool = False) -> np.ndarray:
    """Convert a raw image buffer with ROS ``sensor_msgs/Image`` semantics to ``uint8 [H, W, 3]`` RGB.

    Args:
      data: the bytes (``bytes``, ``array.array('B')``, memoryview or uint8 numpy array).
      height, width: image size in pixels; step: bytes per row including padding.
      encoding: a ROS image encoding (see ``SUPPORTED_ENCODINGS``); 16-bit data keeps its 8 most significant bits.
      is_bigendian: byte order of 16-bit samples.
    """
    height, width, step = int(height), int(width), int(step)
    enc = str(encoding).strip().lower()
    size = len(data) if not isinstance(data, np.ndarray) else data.nbytes
    if height <= 0 or width <= 0:
        raise ImageConversionError(f'empty image: {_describe(encoding, height, width, step, size)}')

    if enc in _PACKED_ENCODINGS:
        channels, depth = _PACKED_ENCODINGS[enc]
        rows = _rows(data, height, width, step, width * channels * depth, encoding)
        if depth == 2:
            samples = rows.view('>u2' if is_bigendian else '<u2').reshape(height, width, channels)
            pixels = (samples >> 8).astype(np.uint8)
        else:
            pixels = rows.reshape(height, width, channels)
        if channels == 1:
            return np.repeat(pixels, 3, axis=2)
        order = _RGB_ORDER[enc]
        if order == (0, 1, 2) and channels == 3 and pixels.flags.c_contiguous:
            return pixels
        return np.ascontiguousarray(pixels[:, :, list(order)])

    if enc in _YUV422_LAYOUTS:
        if width % 2:
            raise ImageConversionError(
                f'4:2:2 YUV needs an even width: {_describe(encoding, height, width, step, size)}')
        iy0, iu, iy1, iv = _YUV422_LAYOUTS[enc]
        macro = _rows(data, height, width, step, width * 2, encoding).reshape(height, width // 2, 4)
        y = np.stack([macro[..., iy0], macro[..., iy1]], axis=-1).reshape(height, width)
        u = np.repeat(macro[..., iu], 2, axis=1)
        v = np.repeat(macro[..., iv], 2, axis=1)
        return _yuv_to_rgb(y, u, v)

    if enc in _NV_LAYOUTS:
        if width % 2 or height % 2:
            raise ImageConversionError(
                f'4:2:0 YUV needs an even width and height: {_describe(encoding, height, width, step, size)}')
        # Y plane (height rows) followed by the interleaved chroma plane (height/2 rows), both `step` bytes/row.
        planes = _rows(data, height * 3 // 2, width, step, width, encoding)
        y = planes[:height]
        chroma = planes[height:].reshape(height // 2, width // 2, 2)
        iu, iv = _NV_LAYOUTS[enc]
        u = np.repeat(np.repeat(chroma[..., iu], 2, axis=0), 2, axis=1)
        v = np.repeat(np.repeat(chroma[..., iv], 2, axis=0), 2, axis=1)
        return _yuv_to_rgb(y, u, v)

    raise ImageConversionError(
        f'unsupported image encoding {encoding!r} ({_describe(encoding, height, width, step, size)}); '
        f'supported: {", ".join(SUPPORTED_ENCODINGS)}')


def image_msg_to_rgb(msg) -> np.ndarray:
    """``sensor_msgs/Image`` -> ``uint8 [H, W, 3]`` RGB (see :func:`image_buffer_to_rgb`)."""
    return image_buffer_to_rgb(msg.data, msg.height, msg.width, msg.step, msg.encoding, bool(msg.is_bigendian))


def compressed_image_msg_to_rgb(msg) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (JPEG or PNG, as published by image_transport's ``compressed`` plugin) ->
    ``uint8 [H, W, 3]`` RGB. ``compressedDepth`` (16-bit depth) is rejected."""
    import cv2
    fmt = str(msg.format)
    fmt_lower = fmt.lower()
    data = np.frombuffer(msg.data, dtype=np.uint8) if not isinstance(msg.data, np.ndarray) else msg.data
    if 'compresseddepth' in fmt_lower:
        raise ImageConversionError(f'compressedDepth images are not supported (format={fmt!r})')
    if fmt_lower and not any(name in fmt_lower for name in ('jpeg', 'jpg', 'png')):
        raise ImageConversionError(
            f'unsupported compressed format {fmt!r} ({data.size} bytes); supported: jpeg, png')
    if data.size == 0:
        raise ImageConversionError(f'empty compressed image (format={fmt!r})')
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise ImageConversionError(f'cannot decode compressed image (format={fmt!r}, {data.size} bytes)')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def fill_image_msg(msg, image: np.ndarray, encoding: str = 'rgb8'):
    """Fill a ``sensor_msgs/Image`` from a ``uint8 [H, W, 3]`` RGB (or ``[H, W]`` mono8) array; returns ``msg``.

    ``encoding`` may be ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8`` or ``mono8`` (the pixels are converted); the
    header is left to the caller.
    """
    import array
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ImageConversionError(f'expected a uint8 image, got {image.dtype}')
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageConversionError(f'expected an [H, W, 3] RGB image, got shape {image.shape}')
    enc = encoding.lower()
    if enc == 'rgb8':
        out = image
    elif enc == 'bgr8':
        out = image[..., ::-1]
    elif enc in ('rgba8', 'bgra8'):
        alpha = np.full(image.shape[:2] + (1,), 255, np.uint8)
        out = np.concatenate([image if enc == 'rgba8' else image[..., ::-1], alpha], axis=2)
    elif enc == 'mono8':
        out = np.rint(image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
        out = np.clip(out, 0, 255).astype(np.uint8)
    else:
        raise ImageConversionError(f'fill_image_msg cannot write encoding {encoding!r}; '
                                   f'use rgb8, bgr8, rgba8, bgra8 or mono8')
    out = np.ascontiguousarray(out)
    msg.height, msg.width = int(image.shape[0]), int(image.shape[1])
    msg.encoding = enc
    msg.is_bigendian = 0
    msg.step = int(out.strides[0])
    msg.data = array.array('B', out.tobytes())
    return msg
