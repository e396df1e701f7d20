"""Backbones: structure against independent references (torchvision's published parameter counts, the official
MeTRAbs checkpoint key scheme), output shapes/stride, BN folding, and the latent-point decoder of the pose graph."""
import numpy as np
import pytest

torch = pytest.importorskip('torch')

from metrabs_ros.training.backbones import BACKBONE_KINDS, Backbone  # noqa: E402
from metrabs_ros.training.fusion import fuse_batchnorm  # noqa: E402
from metrabs_ros.training.import_official import map_official_state_dict  # noqa: E402
from metrabs_ros.training.pose_graph import build_pose_graph  # noqa: E402

from test_import_official import STAGES_S, official_shapes  # noqa: E402

# torchvision's documented num_params of the ImageNet classifiers minus their classifier layers
# (EfficientNetV2: Linear(1280, 1000); MobileNetV3-L: Linear(960, 1280) + Linear(1280, 1000);
#  MobileNetV3-S: Linear(576, 1024) + Linear(1024, 1000); ResNet: Linear(512·e, 1000)).
TORCHVISION_TRUNK_PARAMS = {
    'efficientnetv2-s': 21458488 - 1281000, 'efficientnetv2-m': 54139356 - 1281000,
    'efficientnetv2-l': 118515272 - 1281000, 'mobilenetv3-large': 5483032 - 1230080 - 1281000,
    'mobilenetv3-small': 2542856 - 590848 - 1025000, 'resnet18': 11689512 - 513000,
    'resnet50': 25557032 - 2049000,
}
OUT_CHANNELS = {'efficientnetv2-s': 1280, 'efficientnetv2-m': 1280, 'efficientnetv2-l': 1280,
                'mobilenetv3-large': 960, 'mobilenetv3-small': 576, 'resnet18': 512, 'resnet50': 2048}
# Official stage tables (metrabs_pytorch/backbones/efficientnet.py): (fused, expand, stride, in, out, blocks).
STAGES_M = [(True, 1, 1, 24, 24, 3), (True, 4, 2, 24, 48, 5), (True, 4, 2, 48, 80, 5), (False, 4, 2, 80, 160, 7),
            (False, 6, 1, 160, 176, 14), (False, 6, 2, 176, 304, 18), (False, 6, 1, 304, 512, 5)]
STAGES_L = [(True, 1, 1, 32, 32, 4), (True, 4, 2, 32, 64, 7), (True, 4, 2, 64, 96, 7), (False, 4, 2, 96, 192, 10),
            (False, 6, 1, 192, 224, 19), (False, 6, 2, 224, 384, 25), (False, 6, 1, 384, 640, 7)]


@pytest.mark.parametrize('kind', sorted(TORCHVISION_TRUNK_PARAMS))
def test_parameter_counts_match_torchvision(kind):
    with torch.device('meta'):
        model = Backbone(kind)
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_TRUNK_PARAMS[kind]
    assert model.out_channels == OUT_CHANNELS[kind] and model.stride == 32


@pytest.mark.parametrize('size,stages', [('s', STAGES_S), ('m', STAGES_M), ('l', STAGES_L)])
def test_efficientnet_keys_and_shapes_match_official_checkpoint_scheme(size, stages):
    """Every key and shape of the official crop-model checkpoint (backbone part) has its counterpart."""
    official = official_shapes(stages, num_joints=5)
    with torch.device('meta'):
        graph = build_pose_graph(['a', 'b', 'c', 'd', 'e'], 384, Backbone(f'efficientnetv2-{size}'))
    ours = {k: tuple(v.shape) for k, v in graph.state_dict().items()}
    mapped = {k: tuple(v.shape) for k, v in map_official_state_dict(
        {k: torch.empty(s, device='meta') for k, s in official.items()}).items()}
    assert mapped == ours


@pytest.mark.parametrize('kind', ['mobilenetv3-large', 'mobilenetv3-small', 'resnet18', 'efficientnetv2-s'])
def test_output_shape_is_stride_32(kind):
    torch.manual_seed(0)
    model = Backbone(kind).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 96, 64))
    assert out.shape == (2, OUT_CHANNELS[kind], 3, 2)
    assert torch.isfinite(out).all()


def test_factory_rejects_unknown_kind_and_wrong_channels():
    with pytest.raises(ValueError, match='unknown backbone kind'):
        Backbone('vgg16')
    with pytest.raises(ValueError, match='1280 output channels'):
        Backbone('efficientnetv2-s', out_channels=512)
    assert set(OUT_CHANNELS) < set(BACKBONE_KINDS)


@pytest.mark.parametrize('kind', ['mobilenetv3-small', 'resnet18'])
def test_batchnorm_folding_preserves_the_function(kind):
    torch.manual_seed(1)
    model = Backbone(kind)
    for m in model.modules():  # non-trivial running statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    model.eval()
    fused = fuse_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        np.testing.assert_allclose(fused(x).numpy(), model(x).numpy(), rtol=1e-4, atol=1e-4)


def test_latent_decoder_gives_affine_combinations_of_reconstructed_latents():
    torch.manual_seed(2)
    joints = ['pelv', 'lhip', 'rhip', 'neck']
    rng = np.random.default_rng(0)
    decoder = rng.uniform(0, 1, (6, 4))
    decoder /= decoder.sum(0)
    graph = build_pose_graph(joints, 64, latent_decoder=decoder).eval()
    plain = build_pose_graph([f'p{i}' for i in range(6)], 64,
                             backbone=graph.backbone).eval()
    plain.head.load_state_dict(graph.head.state_dict())
    crops = torch.rand(3, 3, 64, 64)
    k = torch.tensor([[80.0, 0, 32], [0, 80.0, 32], [0, 0, 1]]).expand(3, 3, 3)
    with torch.no_grad():
        latents, _ = plain.crop_poses(crops, k)
        decoded, _ = graph.crop_poses(crops, k)
    expected = np.einsum('nlc,lj->njc', latents.numpy().astype(np.float64), decoder)
    np.testing.assert_allclose(decoded.numpy(), expected, rtol=1e-5, atol=1e-3)
    with pytest.raises(ValueError, match='sum to 1'):
        build_pose_graph(joints, 64, latent_decoder=decoder * 2)
