"""sensor_msgs/Image and CompressedImage -> RGB conversion (pure numpy; no DDS, no rclpy needed).

Expectations are computed independently: channel shuffles by explicit indexing, YUV via OpenCV's cvtColor,
compressed images via cv2.imencode of a known image.
"""

import types

import cv2
import numpy as np
import pytest

from metrabs_ros.ros.image_conversion import (SUPPORTED_ENCODINGS, ImageConversionError, compressed_image_msg_to_rgb,
                                              fill_image_msg, image_buffer_to_rgb, image_msg_to_rgb)

H, W = 6, 8


@pytest.fixture(scope='module')
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def make_msg(pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False):
    """An Image-like message with `pad` bytes of garbage after every row."""
    height = pixels.shape[0]
    row = np.ascontiguousarray(pixels).reshape(height, -1).view(np.uint8)
    padded = np.concatenate([row, np.full((height, pad), 0xAB, np.uint8)], axis=1)
    return types.SimpleNamespace(height=height, width=pixels.shape[1], step=padded.shape[1], encoding=encoding,
                                 is_bigendian=int(bigendian), data=padded.tobytes())


@pytest.mark.parametrize('pad', [0, 5])
@pytest.mark.parametrize('encoding,make', [
    ('rgb8', lambda x: x),
    ('bgr8', lambda x: x[..., [2, 1, 0]]),
    ('rgba8', lambda x: np.dstack([x, np.full(x.shape[:2], 7, np.uint8)])),
    ('bgra8', lambda x: np.dstack([x[..., [2, 1, 0]], np.full(x.shape[:2], 7, np.uint8)])),
])
def test_colour_8bit(rgb, encoding, make, pad):
    out = image_msg_to_rgb(make_msg(make(rgb), encoding, pad))
    assert out.shape == (H, W, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize('pad', [0, 3])
def test_mono8(rgb, pad):
    gray = rgb[..., 0]
    for encoding in ('mono8', '8UC1'):
        out = image_msg_to_rgb(make_msg(gray, encoding, pad))
        np.testing.assert_array_equal(out, np.dstack([gray] * 3))


@pytest.mark.parametrize('bigendian', [False, True])
@pytest.mark.parametrize('pad', [0, 2])
def test_16bit(rgb, bigendian, pad):
    rng = np.random.default_rng(1)
    values = rng.integers(0, 65536, (H, W, 3), dtype=np.uint16)
    dtype = '>u2' if bigendian else '<u2'
    expected = (values // 256).astype(np.uint8)
    out = image_msg_to_rgb(make_msg(values.astype(dtype), 'rgb16', pad, bigendian))
    np.testing.assert_array_equal(out, expected)
    out = image_msg_to_rgb(make_msg(values[..., ::-1].astype(dtype), 'bgr16', pad, bigendian))
    np.testing.assert_array_equal(out, expected)
    out = image_msg_to_rgb(make_msg(values[..., 0].astype(dtype), 'mono16', pad, bigendian))
    np.testing.assert_array_equal(out, np.dstack([expected[..., 0]] * 3))


def _bt601_yuv(rgb):
    """Independent RGB -> YUV (BT.601 video range) to make test inputs."""
    r, g, b = [rgb[..., i].astype(np.float64) for i in range(3)]
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    return [np.clip(np.rint(c), 0, 255).astype(np.uint8) for c in (y, u, v)]


@pytest.mark.parametrize('pad', [0, 4])
@pytest.mark.parametrize('encoding,order,cv_code', [
    ('uyvy', 'uyvy', cv2.COLOR_YUV2RGB_UYVY), ('yuv422', 'uyvy', cv2.COLOR_YUV2RGB_UYVY),
    ('yuyv', 'yuyv', cv2.COLOR_YUV2RGB_YUYV), ('yuv422_yuy2', 'yuyv', cv2.COLOR_YUV2RGB_YUYV),
])
def test_yuv422_matches_opencv(rgb, encoding, order, cv_code, pad):
    y, u, v = _bt601_yuv(rgb)
    u2 = u[:, 0::2]
    v2 = v[:, 0::2]
    if order == 'uyvy':
        packed = np.stack([u2, y[:, 0::2], v2, y[:, 1::2]], axis=-1).reshape(H, W * 2)
    else:
        packed = np.stack([y[:, 0::2], u2, y[:, 1::2], v2], axis=-1).reshape(H, W * 2)
    expected = cv2.cvtColor(packed.reshape(H, W, 2), cv_code)
    msg = make_msg(packed, encoding, pad)
    msg.width = W                                            # 2 bytes per pixel
    out = image_msg_to_rgb(msg)
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 2
    # and the round trip stays close to the original colours (chroma subsampled horizontally)
    assert np.median(np.abs(out.astype(int) - rgb.astype(int))) < 60


@pytest.mark.parametrize('pad', [0, 6])
@pytest.mark.parametrize('encoding,cv_code', [('nv12', cv2.COLOR_YUV2RGB_NV12), ('nv21', cv2.COLOR_YUV2RGB_NV21)])
def test_nv12_nv21_match_opencv(rgb, encoding, cv_code, pad):
    y, u, v = _bt601_yuv(rgb)
    u4, v4 = u[0::2, 0::2], v[0::2, 0::2]
    chroma = np.stack([u4, v4] if encoding == 'nv12' else [v4, u4], axis=-1).reshape(H // 2, W)
    planes = np.concatenate([y, chroma], axis=0)            # [H*3/2, W]
    expected = cv2.cvtColor(planes, cv_code)
    msg = make_msg(planes, encoding, pad)
    msg.height = H                                           # Image.height is the picture's height
    out = image_msg_to_rgb(msg)
    assert out.shape == (H, W, 3)
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 2


def test_array_array_data_and_no_copy(rgb):
    import array
    msg = make_msg(rgb, 'rgb8')
    msg.data = array.array('B', msg.data)
    out = image_msg_to_rgb(msg)
    np.testing.assert_array_equal(out, rgb)


def test_last_row_without_padding_is_accepted(rgb):
    msg = make_msg(rgb, 'rgb8', pad=4)
    msg.data = msg.data[:-4]                                 # some drivers omit the final row's padding
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)


@pytest.mark.parametrize('mutate,match', [
    (lambda m: setattr(m, 'data', m.data[:-10]), 'truncated'),
    (lambda m: setattr(m, 'data', b''), 'truncated'),
    (lambda m: setattr(m, 'step', W * 3 - 1), 'step'),
    (lambda m: setattr(m, 'encoding', 'bayer_rggb8'), 'unsupported image encoding'),
    (lambda m: setattr(m, 'encoding', '32FC1'), 'unsupported image encoding'),
    (lambda m: (setattr(m, 'height', 0), setattr(m, 'data', b'')), 'empty image'),
    (lambda m: setattr(m, 'width', 0), 'empty image'),
])
def test_errors_name_the_problem(rgb, mutate, match):
    msg = make_msg(rgb, 'rgb8')
    mutate(msg)
    with pytest.raises(ImageConversionError, match=match) as info:
        image_msg_to_rgb(msg)
    text = str(info.value)
    assert 'encoding=' in text and 'step=' in text and 'size=' in text


def test_odd_width_yuv_is_rejected():
    with pytest.raises(ImageConversionError, match='even width'):
        image_buffer_to_rgb(b'\0' * 3 * 2 * 2, 2, 3, 6, 'uyvy')


def test_supported_list_mentions_all():
    for name in ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', 'mono16', 'yuv422', 'uyvy', 'yuyv', 'yuv422_yuy2',
                 'nv12', 'nv21'):
        assert name in SUPPORTED_ENCODINGS


def test_compressed_png_exact_and_jpeg_close():
    rng = np.random.default_rng(2)
    image = np.kron(rng.integers(0, 256, (6, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)  # 48x64 blocks
    ok, png = cv2.imencode('.png', image[..., ::-1])
    assert ok
    out = compressed_image_msg_to_rgb(types.SimpleNamespace(format='png', data=png.tobytes()))
    np.testing.assert_array_equal(out, image)
    ok, jpeg = cv2.imencode('.jpg', image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    out = compressed_image_msg_to_rgb(types.SimpleNamespace(format='rgb8; jpeg compressed bgr8',
                                                            data=jpeg.tobytes()))
    assert out.shape == image.shape
    assert np.mean(np.abs(out.astype(int) - image.astype(int))) < 8


@pytest.mark.parametrize('fmt,data,match', [
    ('jpeg', b'\xff\xd8garbage', 'cannot decode'),
    ('jpeg', b'', 'empty compressed'),
    ('16UC1; compressedDepth', b'\x00' * 20, 'compressedDepth'),
    ('theora', b'\x00' * 20, 'unsupported compressed format'),
])
def test_compressed_errors(fmt, data, match):
    with pytest.raises(ImageConversionError, match=match):
        compressed_image_msg_to_rgb(types.SimpleNamespace(format=fmt, data=data))


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'bgra8'])
def test_fill_image_msg_round_trip(rgb, encoding):
    msg = fill_image_msg(types.SimpleNamespace(), rgb, encoding)
    assert msg.step == W * (4 if 'a' in encoding else 3) and msg.encoding == encoding
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)


def test_fill_image_msg_mono8_matches_opencv_gray(rgb):
    msg = fill_image_msg(types.SimpleNamespace(), rgb, 'mono8')
    expected = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    out = image_msg_to_rgb(msg)[..., 0]
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1
