"""`metrabs-ros benchmark-gpu` and `gpu-agreement` run end to end on the CPU with tiny sizes (so the commands are
known to work before a GPU session runs them for real)."""

import json

from metrabs_ros.cli import main


def test_benchmark_gpu_command_on_cpu(tmp_path):
    out = tmp_path / 'bench.json'
    code = main(['benchmark-gpu', '--backends', 'torch-cpu', 'onnxruntime', 'tensorrt', '--models', 'fixture',
                 '--precision', 'fp32', '--resolution', '64', '--image-size', '128x96', '--people', '1', '2',
                 '--num-aug', '1', '--frames', '3', '--warmup', '1', '--threads', '1', '--json', str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report['device'] and report['mode'] == 'estimate_poses (boxes given)'
    rows = report['rows']
    assert {r['backend'] for r in rows} >= {'torch-cpu/fp32', 'onnxruntime/fp32'}
    for r in rows:
        assert r['frames_measured'] >= 2 and r['fps'] > 0 and r['p50_ms'] <= r['p99_ms']
        assert r['people_out'] == r['people'] and r['outputs_finite']
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert 'no tensorrt module' in report['unavailable']['tensorrt/fp32']


def test_gpu_agreement_command_on_cpu(tmp_path):
    out = tmp_path / 'agree.json'
    code = main(['gpu-agreement', '--backends', 'torch-cpu', '--precision', 'fp32', '--resolution', '64',
                 '--case', '2,2,128x96', '--json', str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report['all_ok'] and report['rows'][0]['max_abs_diff_mm'] <= 1.0
    assert report['rows'][0]['reference_finite']
