"""Training losses against hand-computed values, masks and the step schedule."""
import numpy as np
import pytest

torch = pytest.importorskip('torch')

from metrabs_ros.training.absolute_pose import reconstruct_absolute  # noqa: E402
from metrabs_ros.training.losses import (LossSchedule, absolute_l1_m, metrabs_loss, projection_l1,  # noqa: E402
                                         relative_l1_m)


def t(x):
    return torch.tensor(x, dtype=torch.float32)


def test_relative_l1_is_mean_centred_and_masked():
    true = t([[[0, 0, 1000], [10, 0, 1000], [0, 0, 0]]])
    # Joint 1 is 3 mm too far right; a common 100 mm offset is irrelevant; joint 2 is wrong but unlabelled.
    pred = t([[[0, 0, 1000], [13, 0, 1000], [900, 900, 900]]]) + 100.0
    valid = torch.tensor([[True, True, False]])
    # Centred x: true (−5, 5), pred (−6.5, 6.5) → |Δ| = 1.5 mm on 2 of the 6 labelled entries.
    assert relative_l1_m(pred, true, valid).item() == pytest.approx(3.0 / 6 / 1000, rel=1e-5)
    assert relative_l1_m(pred, true, torch.zeros(1, 3, dtype=torch.bool)).item() == 0.0


def test_absolute_l1_weights_xy_twice_and_skips_near_joints():
    true = t([[[0, 0, 1000], [0, 0, 200], [0, 0, 3000]]])
    pred = true + t([[[1, 1, 1], [50, 50, 50], [0, 0, 9]]])
    valid = torch.tensor([[True, True, True]])
    # Joint 1 (z = 200 mm ≤ 300) is skipped: ((2 + 2 + 1) + (0 + 0 + 9)) / 6 entries.
    assert absolute_l1_m(pred, true, valid).item() == pytest.approx(14.0 / 6 / 1000, rel=1e-5)
    only_first = torch.tensor([[True, True, False]])
    assert absolute_l1_m(pred, true, only_first).item() == pytest.approx(5.0 / 3 / 1000, rel=1e-5)


def test_projection_l1_counts_only_joints_inside_the_crop():
    true = t([[[50, 50], [120, 50], [10, 90]]])          # joint 1 lies outside a 100 px crop
    pred = true + t([[[2, 0], [30, 30], [0, 4]]])
    valid = torch.tensor([[True, True, True]])
    scale = 2.2 / 100                                      # cube metres per crop pixel
    assert projection_l1(pred, true, valid, 100).item() == pytest.approx((2 + 4) / 4 * scale, rel=1e-5)


def _perfect_prediction(resolution=128):
    """A crop camera, a true pose in front of it, and the head outputs a perfect network would give."""
    rng = np.random.default_rng(0)
    true = rng.uniform(-400, 400, (2, 10, 3)) + np.array([100.0, -50.0, 4000.0])
    k = np.array([[300.0, 0, resolution / 2], [0, 300.0, resolution / 2], [0, 0, 1]])
    proj = true @ k.T
    coords2d = proj[..., :2] / proj[..., 2:]
    rel = true - true.mean(1, keepdims=True) + 1100.0     # unknown offset
    return t(coords2d), t(rel), t(np.stack([k, k])), t(true)


def test_metrabs_loss_schedule_and_perfect_prediction():
    coords2d, rel, k, true = _perfect_prediction()
    valid = torch.ones(2, 10, dtype=torch.bool)
    schedule = LossSchedule()
    late = metrabs_loss(coords2d, rel, k, true, valid, step=6000, resolution=128, schedule=schedule)
    assert late['relative'].item() < 1e-6 and late['projection'].item() < 1e-6
    assert late['absolute'].item() < 3e-3                  # the ridge (λ = 1e-2) shrinks t slightly: < 3 mm at 4 m
    unregularised = reconstruct_absolute(coords2d, rel, k, resolution=128, ridge=0.0)
    np.testing.assert_allclose(unregularised.numpy(), true.numpy(), atol=0.05)
    # Perturb the relative pose: the total is relative + 0.1·absolute + projection after step 5000 …
    noisy = rel + 20.0 * torch.randn(rel.shape, generator=torch.Generator().manual_seed(0))
    late = metrabs_loss(coords2d, noisy, k, true, valid, step=6000, resolution=128)
    expected = late['relative'] + 0.1 * late['absolute'] + late['projection']
    assert late['total'].item() == pytest.approx(expected.item(), rel=1e-6)
    assert late['absolute'].item() > 1e-3
    # … and relative + projection before it.
    early = metrabs_loss(coords2d, noisy, k, true, valid, step=100, resolution=128)
    assert early['total'].item() == pytest.approx((early['relative'] + early['projection']).item(), rel=1e-6)
    assert schedule.weak_perspective_at(499) and not schedule.weak_perspective_at(500)


def test_weak_perspective_is_exact_for_a_fronto_parallel_pose():
    rng = np.random.default_rng(1)
    true = np.concatenate([rng.uniform(-300, 300, (1, 8, 2)), np.full((1, 8, 1), 3000.0)], axis=-1)
    true += np.array([200.0, 100.0, 0.0])
    k = np.array([[[250.0, 0, 64], [0, 250.0, 64], [0, 0, 1]]])
    proj = true @ k[0].T
    coords2d = t(proj[..., :2] / proj[..., 2:])
    rel = t(true - true.mean(1, keepdims=True))
    got = reconstruct_absolute(coords2d, rel, t(k), resolution=128, weak_perspective=True)
    np.testing.assert_allclose(got.numpy(), true, atol=0.05)
