"""The runtime (library, estimator on ONNX Runtime, CLI start-up) never imports PyTorch or other training-only
packages; the estimator does not touch the training package at all (the CLI only registers its commands)."""

import subprocess
import sys

CODE = """
import sys
import numpy as np
from metrabs_ros import PoseEstimator
estimator = PoseEstimator(sys.argv[1], sys.argv[2], backend='auto', num_threads=1)
result = estimator.detect_poses(np.zeros((120, 160, 3), np.uint8))
print('TRAINING', sorted(m for m in sys.modules if m.startswith('metrabs_ros.training')))
from metrabs_ros.cli import build_parser
build_parser()
print('HEAVY', sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'anny', 'numba', 'warp', 'matplotlib')))
"""


def test_runtime_does_not_import_torch_or_training(fixture_pose_model, colour_key_detector):
    proc = subprocess.run([sys.executable, '-c', CODE, fixture_pose_model, colour_key_detector],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert 'TRAINING []' in proc.stdout, proc.stdout
    assert 'HEAVY []' in proc.stdout, proc.stdout
