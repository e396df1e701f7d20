"""`metrabs-ros export CHECKPOINT --out model.onnx` (our checkpoint format) and `metrabs-ros predict` on the result,
as separate processes; FP16 export with the precision split checked in the ONNX graph."""
import json
import re
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip('torch')
onnx = pytest.importorskip('onnx')

from metrabs_ros.io_utils import write_image_rgb  # noqa: E402
from metrabs_ros.synthetic_scene import render_scene  # noqa: E402
from metrabs_ros.training.checkpoint import graph_from_config, load_checkpoint, save_checkpoint  # noqa: E402
from metrabs_ros.training.export import example_inputs, run_onnx  # noqa: E402
from metrabs_ros.training.fixtures import build_random_pose_graph  # noqa: E402

RES = 128


def run_cli(*args):
    return subprocess.run([sys.executable, '-m', 'metrabs_ros.cli', *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def fixture_checkpoint(path):
    graph, meta = build_random_pose_graph(RES, 'smpl_24', seed=0)
    config = {'backbone': 'tiny', 'backbone_options': {'out_channels': 64, 'coord_channels': True},
              'resolution': RES, 'joint_names': list(graph.joint_names), 'joint_edges': meta['joint_edges'],
              'skeletons': meta['skeletons'], 'default_skeleton': meta['default_skeleton'],
              'bone_lengths_mm': meta['bone_lengths_mm'], 'name': 'cli-fixture', 'training': 'none'}
    return save_checkpoint(path, graph, config), graph


def test_export_command_then_predict(tmp_path, colour_key_detector):
    ckpt, graph = fixture_checkpoint(tmp_path / 'model.pt')
    out = tmp_path / 'model.onnx'
    proc = run_cli('export', ckpt, '--out', out)
    assert proc.returncode == 0, proc.stderr
    diff = float(re.search(r'= ([0-9.]+) mm', proc.stdout).group(1))
    assert diff <= 0.5, proc.stdout
    inputs = example_inputs(3, 2, (100, 150), seed=4, resolution=RES)
    with torch.no_grad():
        expected = graph(*inputs).numpy()
    assert np.abs(run_onnx(out, inputs)[0] - expected).max() <= 0.5

    scene = render_scene(seed=3, num_people=1, flat_colours=True, image_hw=(240, 320))
    image = tmp_path / 'scene.png'
    write_image_rgb(image, scene.image_rgb)
    (tmp_path / 'camera.json').write_text(json.dumps({'K': scene.camera.intrinsic_matrix.tolist()}))
    proc = run_cli('predict', image, '--model', out, '--detector', colour_key_detector, '--json',
                   tmp_path / 'poses.jsonl', '--intrinsics', tmp_path / 'camera.json', '--threads', '1',
                   '--no-suppress')
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / 'poses.jsonl').read_text().splitlines()[0])
    assert record['skeleton'] == 'smpl_24' and len(record['people']) == 1
    person = record['people'][0]
    projected = scene.camera.project_px(np.asarray(person['joints3d_mm']))
    np.testing.assert_allclose(projected, person['joints2d_px'], atol=0.1)


def test_checkpoint_roundtrip_and_foreign_files(tmp_path):
    ckpt, graph = fixture_checkpoint(tmp_path / 'model.pt')
    loaded, config = load_checkpoint(ckpt)
    assert config['name'] == 'cli-fixture'
    for key, value in graph.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    torch.save(graph.state_dict(), tmp_path / 'plain.pt')
    with pytest.raises(ValueError, match='import-official'):
        load_checkpoint(tmp_path / 'plain.pt')
    data = torch.load(ckpt, weights_only=True)
    del data['state_dict']['head.conv.bias']
    torch.save(data, tmp_path / 'broken.pt')
    with pytest.raises(ValueError, match=r"missing keys \['head\.conv\.bias'\]"):
        load_checkpoint(tmp_path / 'broken.pt')


def _op_output_types(path):
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    types = {v.name: v.type.tensor_type.elem_type for v in list(model.graph.value_info) + list(model.graph.output)}
    result = {}
    for node in model.graph.node:
        result.setdefault(node.op_type, set()).add(types.get(node.output[0]))
    return result


@pytest.mark.parametrize('fp16', [False, True])
def test_export_mobilenet_checkpoint_fp32_fp16(tmp_path, fp16, capsys):
    from metrabs_ros.training.commands import cmd_export
    import argparse
    torch.manual_seed(0)
    config = {'backbone': 'mobilenetv3-small', 'resolution': 64, 'joint_names': ['pelv', 'lhip', 'rhip', 'neck'],
              'joint_edges': [[0, 1], [0, 2], [0, 3]]}
    graph = graph_from_config(config)
    ckpt = save_checkpoint(tmp_path / 'mnv3.pt', graph, config)
    out = tmp_path / ('mnv3_fp16.onnx' if fp16 else 'mnv3.onnx')
    assert cmd_export(argparse.Namespace(checkpoint=ckpt, out=out, fp16=fp16, no_parity=False)) == 0
    printed = capsys.readouterr().out
    diff = float(re.search(r'= ([0-9.]+) mm', printed).group(1))
    assert diff <= (20.0 if fp16 else 0.5), printed
    types = _op_output_types(out)
    f16, f32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    assert types['Conv'] == {f16 if fp16 else f32}
    assert types['Softmax'] == {f32} and types['GridSample'] == {f32}
    assert 'BatchNormalization' not in types     # folded into the convolutions
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta['precision'] == ('fp16' if fp16 else 'fp32')
