"""Import of an official MeTRAbs PyTorch folder (config.yaml, ckpt.pt, joint_info.npz, skeleton_infos.pkl,
joint_transform_matrix.npy) → contract ONNX, checked with real ONNX Runtime sessions.

The official weights cannot be downloaded here, so the test writes a folder with the official layout: the
checkpoint keys and shapes are generated below from the official naming scheme (metrabs_pytorch's
convert_model_from_tf.py: stem, blocks_N → backbone.1.<stage>.<block>.block.<i>, penultimate conv, head
conv_final), independently of metrabs_ros.training.efficientnet, with random values. The crop model is also
checked against a functional forward pass written here from the official module definitions."""
import pickle

import numpy as np
import pytest
import yaml

torch = pytest.importorskip('torch')
ort = pytest.importorskip('onnxruntime')
F = torch.nn.functional

from metrabs_ros.model_contract import read_pose_model_info  # noqa: E402
from metrabs_ros.skeletons import get_skeleton  # noqa: E402
from metrabs_ros.training.export import example_inputs, run_onnx  # noqa: E402
from metrabs_ros.training.import_official import (RestrictedUnpickler, import_official,  # noqa: E402
                                                  load_official_folder, restricted_pickle_load)

RES = 96
# EfficientNetV2-S stages from the official _efficientnet_conf: (fused, expand, stride, in, out, blocks), kernel 3.
STAGES_S = [(True, 1, 1, 24, 24, 2), (True, 4, 2, 24, 48, 4), (True, 4, 2, 48, 64, 4),
            (False, 4, 2, 64, 128, 6), (False, 6, 1, 128, 160, 9), (False, 6, 2, 160, 256, 15)]
BN_KEYS = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')


def official_shapes(stages, num_joints, depth=8):
    """Ordered {key: shape} of the official crop model's state dict."""
    shapes = {}

    def conv_bn(prefix, c_in, c_out, k, groups=1):
        shapes[f'{prefix}.0.weight'] = (c_out, c_in // groups, k, k)
        for key in BN_KEYS:
            shapes[f'{prefix}.1.{key}'] = () if key == 'num_batches_tracked' else (c_out,)

    conv_bn('backbone.1.0', 3, stages[0][3], 3)
    for i_stage, (fused, expand, _, c_in0, c_out, blocks) in enumerate(stages):
        for b in range(blocks):
            c_in = c_in0 if b == 0 else c_out
            p = f'backbone.1.{i_stage + 1}.{b}.block'
            exp = c_in * expand
            if fused and expand == 1:
                conv_bn(f'{p}.0', c_in, c_out, 3)
            elif fused:
                conv_bn(f'{p}.0', c_in, exp, 3)
                conv_bn(f'{p}.1', exp, c_out, 1)
            else:
                conv_bn(f'{p}.0', c_in, exp, 1)
                conv_bn(f'{p}.1', exp, exp, 3, groups=exp)
                sq = max(1, c_in // 4)
                shapes.update({f'{p}.2.fc1.weight': (sq, exp, 1, 1), f'{p}.2.fc1.bias': (sq,),
                               f'{p}.2.fc2.weight': (exp, sq, 1, 1), f'{p}.2.fc2.bias': (exp,)})
                conv_bn(f'{p}.3', exp, c_out, 1)
    conv_bn(f'backbone.1.{len(stages) + 1}', stages[-1][4], 1280, 1)
    shapes['heatmap_heads.conv_final.weight'] = (num_joints * (1 + depth), 1280, 1, 1)
    shapes['heatmap_heads.conv_final.bias'] = (num_joints * (1 + depth),)
    return shapes


def random_state(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith('num_batches_tracked'):
            state[key] = torch.tensor(1000, dtype=torch.int64)
        elif key.endswith('running_var'):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith('running_mean') or (key.endswith('bias') and len(shape) == 1):
            state[key] = torch.randn(shape, generator=g) * 0.1
        elif len(shape) == 1:  # BN gamma
            state[key] = torch.rand(shape, generator=g) * 0.5 + 0.5
        else:
            fan_in = int(np.prod(shape[1:]))
            state[key] = torch.randn(shape, generator=g) * (1.0 / np.sqrt(fan_in))
    state['heatmap_heads.conv_final.weight'] *= 3.0
    return state


RAW_NAMES = [n + '_smpl' for n in get_skeleton('smpl_24').joint_names]
RAW_EDGES = [list(e) for e in get_skeleton('smpl_24').edges]


def transform_and_infos():
    """[24, 26] transform: identity plus a mid-hip and a mid-shoulder point; three skeleton tables."""
    n = len(RAW_NAMES)
    transform = np.zeros((n, n + 2), np.float32)
    transform[:, :n] = np.eye(n)
    lhip, rhip, lsho, rsho = (RAW_NAMES.index(f'{j}_smpl') for j in ('lhip', 'rhip', 'lsho', 'rsho'))
    transform[[lhip, rhip], n] = 0.5
    transform[[lsho, rsho], n + 1] = 0.5
    all_names = RAW_NAMES + ['mhip', 'msho']
    infos = {
        '': {'indices': np.arange(n + 2, dtype=np.int32), 'names': np.array(all_names), 'edges': np.array(RAW_EDGES)},
        'smpl_24': {'indices': list(range(n)), 'names': list(get_skeleton('smpl_24').joint_names),
                    'edges': np.array(RAW_EDGES, np.int32)},
        'torso_3': {'indices': np.array([n, n + 1, 0]), 'names': ['mhip', 'msho', 'pelv'], 'edges': [[0, 1]]},
    }
    return transform, infos


def write_official_folder(folder, state=None, config=None):
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {'proc_side': RES, 'stride_train': 32, 'stride_test': 32, 'centered_stride': True,
           'legacy_centered_stride_bug': False, 'efficientnet_size': 's', 'backbone': 'efficientnetv2-s',
           'depth': 8, 'box_size_mm': 2200, 'weak_perspective': False, 'mix_3d_inside_fov': 0.5,
           'affine_weights': None, 'transform_coords': False, 'predict_all_and_latents': False}
    cfg.update(config or {})
    (folder / 'config.yaml').write_text(yaml.safe_dump(cfg))
    if state is None:
        state = random_state(official_shapes(STAGES_S, len(RAW_NAMES)))
    torch.save(state, folder / 'ckpt.pt')
    np.savez(folder / 'joint_info.npz', joint_names=np.array(RAW_NAMES), joint_edges=np.array(RAW_EDGES))
    transform, infos = transform_and_infos()
    np.save(folder / 'joint_transform_matrix.npy', transform)
    with open(folder / 'skeleton_infos.pkl', 'wb') as f:
        pickle.dump(infos, f)
    return folder


def official_crop_forward(state, x01, stages, centered_stride=True):
    """Functional re-statement of the official Sequential(PreprocLayer, EfficientNetV2.features) forward."""
    def cbn(p, x, stride=1, groups=1, act=True, pad=None):
        if pad is not None:
            x = F.pad(x, pad)
        x = F.conv2d(x, state[f'{p}.0.weight'], stride=stride, groups=groups)
        x = F.batch_norm(x, state[f'{p}.1.running_mean'], state[f'{p}.1.running_var'], state[f'{p}.1.weight'],
                         state[f'{p}.1.bias'], eps=1e-3)
        return F.silu(x) if act else x

    x = cbn('backbone.1.0', x01 * 2 - 1, stride=2, pad=(1, 1, 1, 1))
    last_stride2 = max(i for i, s in enumerate(stages) if s[2] == 2)
    for i_stage, (fused, expand, stride0, c_in0, c_out, blocks) in enumerate(stages):
        for b in range(blocks):
            p = f'backbone.1.{i_stage + 1}.{b}.block'
            stride = stride0 if b == 0 else 1
            shifted = centered_stride and b == 0 and i_stage == last_stride2
            pad = (0, 2, 0, 2) if shifted else (1, 1, 1, 1)
            c_in = c_in0 if b == 0 else c_out
            inp = x
            if fused and expand == 1:
                x = cbn(f'{p}.0', x, stride, pad=pad)
            elif fused:
                x = cbn(f'{p}.1', cbn(f'{p}.0', x, stride, pad=pad), act=False)
            else:
                x = cbn(f'{p}.0', x)
                x = cbn(f'{p}.1', x, stride, groups=x.shape[1], pad=pad)
                s = x.mean((2, 3), keepdim=True)
                s = F.silu(F.conv2d(s, state[f'{p}.2.fc1.weight'], state[f'{p}.2.fc1.bias']))
                x = x * torch.sigmoid(F.conv2d(s, state[f'{p}.2.fc2.weight'], state[f'{p}.2.fc2.bias']))
                x = cbn(f'{p}.3', x, act=False)
            if stride == 1 and c_in == c_out:
                x = x + inp
    x = cbn(f'backbone.1.{len(stages) + 1}', x)
    return F.conv2d(x, state['heatmap_heads.conv_final.weight'], state['heatmap_heads.conv_final.bias'])


@pytest.fixture(scope='module')
def official_folder(tmp_path_factory):
    return write_official_folder(tmp_path_factory.mktemp('official') / 'metrabs_eff2s_96px_fixture_pytorch')


@pytest.fixture(scope='module')
def imported(official_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp('onnx') / 'official.onnx'
    lines = []
    report = import_official(official_folder, out, log=lines.append)
    return report, lines


def test_crop_model_matches_official_structure(official_folder):
    graph, _ = load_official_folder(official_folder)
    state = torch.load(official_folder / 'ckpt.pt', weights_only=True)
    x = torch.rand(2, 3, RES, RES, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = official_crop_forward(state, x, STAGES_S)
        got = graph.head.conv(graph.backbone(x))
    assert got.shape == expected.shape == (2, 24 * 9, 3, 3)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_import_exports_contract_model_with_parity(official_folder, imported):
    report, lines = imported
    assert report['parity_max_abs_mm'] is not None and report['parity_max_abs_mm'] <= 0.5, lines
    assert any('parity' in line for line in lines)
    session = ort.InferenceSession(report['path'], providers=['CPUExecutionProvider'])
    info = read_pose_model_info(session, report['path'])
    assert info.resolution == RES and info.joint_names == tuple(RAW_NAMES)
    assert set(info.skeletons) == {'all', 'smpl_24', 'torso_3'}
    assert info.default_skeleton == 'smpl_24'
    assert info.skeletons['smpl_24'].indices.tolist() == list(range(24))   # one-hot columns → indices
    assert info.skeletons['smpl_24'].joint_names == get_skeleton('smpl_24').joint_names
    # Independent check of the skeleton conversion on the ONNX output: official order = raw @ T, then indices.
    inputs = example_inputs(2, 3, (100, 140), seed=5, resolution=RES)
    raw = run_onnx(report['path'], inputs)[0]                               # [P, A, 24, 3]
    transform, infos = transform_and_infos()
    for name, key in (('all', ''), ('torso_3', 'torso_3')):
        expected = np.einsum('pajc,jk->pakc', raw, transform)[..., np.asarray(infos[key]['indices']), :]
        np.testing.assert_allclose(info.skeletons[name].convert(raw), expected, atol=1e-3)


def test_import_matches_torch_for_several_crop_counts(official_folder, imported):
    report, _ = imported
    graph, _ = load_official_folder(official_folder)
    for people, aug, seed in ((1, 1, 0), (3, 2, 1)):
        inputs = example_inputs(people, aug, (90, 120), seed=seed, resolution=RES)
        with torch.no_grad():
            expected = graph(*inputs).numpy()
        got = run_onnx(report['path'], inputs)[0]
        assert got.shape == (people, aug, 24, 3)
        assert np.abs(got - expected).max() <= 0.5


def test_missing_or_extra_key_fails_naming_it(tmp_path):
    state = random_state(official_shapes(STAGES_S, len(RAW_NAMES)))
    missing = dict(state)
    del missing['backbone.1.4.3.block.2.fc1.bias']
    folder = write_official_folder(tmp_path / 'missing', missing)
    with pytest.raises(ValueError, match=r'missing keys.*backbone\.features\.4\.3\.block\.2\.fc1\.bias'):
        load_official_folder(folder)
    extra = dict(state)
    extra['backbone.1.8.0.weight'] = torch.zeros(1)
    folder = write_official_folder(tmp_path / 'extra', extra)
    with pytest.raises(ValueError, match=r'unexpected keys.*backbone\.features\.8\.0\.weight'):
        load_official_folder(folder)
    foreign = dict(state)
    foreign['classifier.1.weight'] = torch.zeros(1)
    folder = write_official_folder(tmp_path / 'foreign', foreign)
    with pytest.raises(ValueError, match=r'classifier\.1\.weight'):
        load_official_folder(folder)
    wrong = dict(state)
    wrong['backbone.1.0.0.weight'] = torch.zeros(24, 3, 5, 5)
    folder = write_official_folder(tmp_path / 'shape', wrong)
    with pytest.raises(ValueError, match=r'backbone\.features\.0\.0\.weight: checkpoint \(24, 3, 5, 5\)'):
        load_official_folder(folder)


def test_unsupported_config_is_rejected(tmp_path):
    folder = write_official_folder(tmp_path / 'latent', config={'affine_weights': 'ae_weights'})
    with pytest.raises(ValueError, match='affine_weights'):
        load_official_folder(folder)
    (folder / 'joint_info.npz').unlink()
    with pytest.raises(FileNotFoundError, match='joint_info.npz'):
        load_official_folder(folder)


class _Exploit:
    def __reduce__(self):
        import os
        return os.system, ('echo pwned > /dev/null',)


def test_restricted_unpickler_refuses_code(tmp_path):
    path = tmp_path / 'evil.pkl'
    path.write_bytes(pickle.dumps({'smpl_24': _Exploit()}))
    with pytest.raises(pickle.UnpicklingError, match=r'os.*system|posix.*system'):
        restricted_pickle_load(path)
    ok = {'a': {'indices': np.arange(3, dtype=np.int32), 'names': np.array(['x', 'y', 'z']), 'edges': [[0, 1]]},
          'b': (1, 2.5, None, True, 'text')}
    path.write_bytes(pickle.dumps(ok))
    loaded = restricted_pickle_load(path)
    assert loaded['b'] == ok['b'] and loaded['a']['names'].tolist() == ['x', 'y', 'z']
    assert loaded['a']['indices'].dtype == np.int32
    assert issubclass(RestrictedUnpickler, pickle.Unpickler)
