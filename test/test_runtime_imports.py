"""The runtime (library, CLI parser, estimator on ONNX Runtime) never imports PyTorch or the training package."""

import subprocess
import sys

CODE = """
import sys
import numpy as np
from metrabs_ros import PoseEstimator
from metrabs_ros.cli import build_parser
build_parser()
estimator = PoseEstimator(sys.argv[1], sys.argv[2], backend='auto', num_threads=1)
result = estimator.detect_poses(np.zeros((120, 160, 3), np.uint8))
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'anny', 'numba', 'warp')
               or m.startswith('metrabs_ros.training'))
print('HEAVY', heavy)
"""


def test_runtime_does_not_import_torch_or_training(fixture_pose_model, colour_key_detector):
    proc = subprocess.run([sys.executable, '-c', CODE, fixture_pose_model, colour_key_detector],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert 'HEAVY []' in proc.stdout, proc.stdout
