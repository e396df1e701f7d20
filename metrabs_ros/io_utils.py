"""Reading inputs for the CLI: images, image folders, videos, intrinsics files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator, Optional, Tuple

import numpy as np

IMAGE_SUFFIXES = {'.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm'}
VIDEO_SUFFIXES = {'.mp4', '.avi', '.mov', '.mkv', '.webm', '.mpg', '.mpeg', '.m4v'}


def read_image_rgb(path) -> np.ndarray:
    import cv2
    image = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f'cannot read image {path}')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_image_rgb(path, image_rgb: np.ndarray) -> None:
    import cv2
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(os.fspath(path), cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)):
        raise ValueError(f'cannot write image {path}')


def count_frames(path) -> Optional[int]:
    path = Path(path)
    if path.is_dir():
        return sum(1 for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        import cv2
        capture = cv2.VideoCapture(os.fspath(path))
        n = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        capture.release()
        return n if n > 0 else None
    return 1


def iterate_frames(path) -> Iterator[Tuple[str, np.ndarray, Optional[float]]]:
    """Yield ``(name, rgb image, fps or None)`` for an image file, a folder of images or a video file."""
    import cv2
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f'input not found: {path}')
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f'no images ({", ".join(sorted(IMAGE_SUFFIXES))}) in folder {path}')
        for file in files:
            yield file.name, read_image_rgb(file), None
    elif path.suffix.lower() in VIDEO_SUFFIXES:
        capture = cv2.VideoCapture(os.fspath(path))
        if not capture.isOpened():
            raise ValueError(f'cannot open video {path}')
        fps = capture.get(cv2.CAP_PROP_FPS) or None
        index = 0
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                yield f'{path.stem}_{index:06d}', cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), fps
                index += 1
        finally:
            capture.release()
        if index == 0:
            raise ValueError(f'video {path} has no readable frames')
    else:
        yield path.name, read_image_rgb(path), None


def load_intrinsics(path) -> dict:
    """Camera parameters from a JSON or YAML file.

    Accepted layouts: ``{"K": 3x3 or 9 values, "dist": [...], "distortion_model": "opencv"|"fisheye"}`` (also
    ``intrinsic_matrix``/``distortion_coeffs``), a bare 3×3 list, or a ROS ``camera_info`` YAML
    (``camera_matrix.data``, ``distortion_coefficients.data``, ``distortion_model``).
    Returns kwargs for :meth:`metrabs_ros.CameraModel.create`.
    """
    text = Path(path).read_text()
    if Path(path).suffix.lower() in ('.yaml', '.yml'):
        import yaml
        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if isinstance(data, list):
        return {'intrinsic_matrix': np.asarray(data, np.float64)}
    if 'camera_matrix' in data:  # ROS camera_calibration YAML
        model = data.get('distortion_model', 'plumb_bob')
        return {'intrinsic_matrix': np.asarray(data['camera_matrix']['data'], np.float64).reshape(3, 3),
                'distortion_coeffs': data.get('distortion_coefficients', {}).get('data'),
                'distortion_model': 'fisheye' if model == 'equidistant' else 'opencv'}
    K = data.get('K', data.get('intrinsic_matrix'))
    if K is None:
        raise ValueError(f'{path}: no "K" / "intrinsic_matrix" / "camera_matrix" entry')
    return {'intrinsic_matrix': np.asarray(K, np.float64).reshape(3, 3),
            'distortion_coeffs': data.get('dist', data.get('distortion_coeffs')),
            'distortion_model': data.get('distortion_model', 'opencv')}
