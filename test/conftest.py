"""Shared fixtures: small contract-conforming models exported by the training code (real ONNX files)."""

import os

import pytest


@pytest.fixture(scope='session')
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp('models')


@pytest.fixture(scope='session')
def fixture_pose_model(models_dir):
    """Tiny deterministic smpl_24 pose model (128 px crops) following the pose/1 contract."""
    from metrabs_ros.training.fixtures import make_random_pose_model
    return make_random_pose_model(os.path.join(models_dir, 'pose_smpl24_128.onnx'), resolution=128,
                                  skeleton='smpl_24', seed=0)


@pytest.fixture(scope='session')
def fixture_pose_model_multi(models_dir):
    """Fixture pose model whose raw joints are the union of smpl_24 and coco_19 (two selectable skeletons)."""
    from metrabs_ros.training.fixtures import make_random_pose_model
    return make_random_pose_model(os.path.join(models_dir, 'pose_multi_128.onnx'), resolution=128,
                                  skeleton=['smpl_24', 'coco_19'], seed=1, with_uncertainty=True)


@pytest.fixture(scope='session')
def colour_key_detector(models_dir):
    """Native-contract detector that finds flat-coloured synthetic people (the first 5 palette colours)."""
    from metrabs_ros.synthetic_scene import FLAT_PALETTE_RGB
    from metrabs_ros.training.colour_key_detector import make_colour_key_detector
    path = os.path.join(models_dir, 'colour_key_detector.onnx')
    make_colour_key_detector(path, [tuple(int(v) for v in c) for c in FLAT_PALETTE_RGB[:5]])
    return path
