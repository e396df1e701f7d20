"""Synthetic data engine: shards, manifest, reader, torch adapters, worker-count independence, CLI preview."""

import argparse
import json
import os

import numpy as np
import pytest

pytest.importorskip('anny')
pytest.importorskip('numba')
pytest.importorskip('pybullet_data')

from metrabs_ros.training.synth import body_model, scene, shards  # noqa: E402
from metrabs_ros.training.synth.generate import generate_dataset  # noqa: E402


def _shard_arrays(folder, k):
    with np.load(os.path.join(folder, shards.shard_name(k))) as d:
        return {n: d[n] for n in d.files}


def test_worker_count_does_not_change_the_data(tmp_path):
    a, b = str(tmp_path / 'w1'), str(tmp_path / 'w2')
    ma = generate_dataset(a, 'crops', 40, seed=2, workers=1, shard_size=16, log=lambda *_: None)
    mb = generate_dataset(b, 'crops', 40, seed=2, workers=2, shard_size=16, log=lambda *_: None)
    assert [s['count'] for s in ma['shards']] == [16, 16, 8]
    assert ma['shards'] == mb['shards']
    for k in range(3):
        x, y = _shard_arrays(a, k), _shard_arrays(b, k)
        assert x.keys() == y.keys()
        for n in x:
            np.testing.assert_array_equal(x[n], y[n], err_msg=f'shard {k} {n}')
    assert ma['samples_per_second'] > 0
    # a different shard size regroups the same samples (skinning batches are aligned groups of 16 indices)
    c = str(tmp_path / 'w2s32')
    generate_dataset(c, 'crops', 40, seed=2, workers=2, shard_size=32, log=lambda *_: None)
    da, dc = shards.open_dataset(a), shards.open_dataset(c)
    assert len(dc.shards) == 2
    for i in (0, 17, 39):
        x, y = da[i], dc[i]
        for n in x:
            np.testing.assert_array_equal(x[n], y[n], err_msg=f'sample {i} {n}')


def test_scene_shards_round_trip(tmp_path):
    folder = str(tmp_path / 'scenes')
    body = body_model.load_body_model()
    settings = scene.Settings(scene_hw=(240, 320))
    manifest = generate_dataset(folder, 'scenes', 20, seed=9, split='val', settings=settings, shard_size=16,
                                image_format='png', log=lambda *_: None)
    with open(os.path.join(folder, 'manifest.json')) as f:
        on_disk = json.load(f)
    assert on_disk == json.loads(json.dumps(manifest))
    assert on_disk['joint_names']['h36m_17'][0] == 'pelv' and on_disk['count'] == 20
    ds = shards.open_dataset(folder)
    assert len(ds) == 20 and ds.kind == 'scenes'
    direct = scene.generate_samples(body, 9, 'val', 'scenes', range(16, 20), settings)
    for i, expected in zip(range(16, 20), direct):
        got = ds[i]
        np.testing.assert_array_equal(got['image'], expected['image'])     # PNG is lossless
        assert int(got['index']) == i
        for k, v in expected.items():
            if k != 'image':   # every generated array comes back unchanged
                np.testing.assert_array_equal(got[k], v, err_msg=k)
        assert len(got['people/box_xywh']) == int(got['num_people'])
        b = got['people/box_xywh']
        np.testing.assert_array_equal(got['boxes_xyxy_px'], np.column_stack([b[:, :2], b[:, :2] + b[:, 2:]]))
    seen = sorted(int(s['index']) for s in ds.iterate(shuffle=True, seed=1))
    assert seen == list(range(20))
    first = [int(s['index']) for s in ds.iterate(shuffle=True, seed=1)][:5]
    assert first != list(range(5))
    with pytest.raises(IndexError):
        ds[20]


def test_write_shard_raw_and_jpeg(tmp_path):
    rng = np.random.default_rng(0)
    samples = [dict(image=rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), K=np.eye(3, dtype=np.float32) * i)
               for i in range(3)]
    for fmt in ('raw', 'jpg'):
        path = str(tmp_path / f'{fmt}.npz')
        shards.write_shard(path, 'crops', [5, 6, 7], samples, fmt)
        with np.load(path) as d:
            arrays = {n: d[n] for n in d.files}
        assert arrays['index'].tolist() == [5, 6, 7]
        np.testing.assert_array_equal(arrays['K'], np.stack([s['K'] for s in samples]))
        if fmt == 'raw':
            np.testing.assert_array_equal(arrays['images'], np.stack([s['image'] for s in samples]))
        else:
            off = arrays['image_offsets']
            img = shards.decode_image(arrays['image_bytes'][off[1]:off[2]])
            assert img.shape == (32, 32, 3)
    with pytest.raises(ValueError, match='jpg, png or raw'):
        shards.encode_image(samples[0]['image'], 'gif')


def test_cli_preview_and_torch_adapters(tmp_path):
    torch = pytest.importorskip('torch')
    from metrabs_ros.training.synth.commands import register_commands
    from metrabs_ros.training.synth.torch_dataset import SynthIterableDataset, SynthTorchDataset

    parser = argparse.ArgumentParser()
    register_commands(parser.add_subparsers())
    out, preview = str(tmp_path / 'crops'), str(tmp_path / 'preview.png')
    args = parser.parse_args(['synth', '--kind', 'crops', '--count', '16', '--seed', '1', '--out', out,
                              '--size', '128', '--shard-size', '16', '--preview', preview])
    assert args.func(args) == 0
    import cv2
    sheet = cv2.imread(preview)
    assert sheet is not None and sheet.shape[0] >= 256
    ds = SynthTorchDataset(out)
    item = ds[3]
    assert item['image'].shape == (3, 128, 128) and item['image'].dtype == torch.float32
    assert item['h36m_17/joints3d_mm'].shape == (17, 3)
    loader = torch.utils.data.DataLoader(ds, batch_size=4)
    batch = next(iter(loader))
    assert batch['K'].shape == (4, 3, 3)
    streamed = [int(s['index']) for s in SynthIterableDataset(out, shuffle=True, seed=0)]
    assert sorted(streamed) == list(range(16))
    with open(os.path.join(out, 'manifest.json')) as f:
        assert 'synth --kind crops' in json.load(f)['command']
