"""Give a pose model every format of an ACAE: new 'matrix' skeleton entries in the ONNX metadata (graph unchanged).

A format the model does not predict itself becomes the affine combination encoder · decoder[:, format] of the raw
joints the ACAE encoder reads (docs/skeletons.md, docs/model_contract.md 'skeletons'). The model's own formats keep
their 'indices' entries unless `replace` (then they too pass through the autoencoder, which makes all formats
mutually consistent, as the released official models do with W1·W2).
"""
import json
import os
from typing import List, Optional, Sequence

from metrabs_ros.acae import encoder_rows, load_acae, skeleton_mappings


def attach_acae(model_path: str, acae_path: str, out_path: str, formats: Optional[Sequence[str]] = None,
                replace: bool = False) -> List[str]:
    import onnx

    info = load_model_info(model_path)       # a conforming pose model, or a ModelLoadError naming the problem
    model = onnx.load(model_path)
    meta = {p.key: p.value for p in model.metadata_props}
    acae = load_acae(acae_path)
    joint_names = json.loads(meta['joint_names'])
    skeletons = json.loads(meta.get('skeletons', '{}'))
    chosen = list(formats) if formats else list(acae.formats)
    unknown = [f for f in chosen if f not in acae.formats]
    if unknown:
        raise ValueError(f'formats {unknown} are not in {acae_path}; it has {", ".join(acae.formats)}')
    if not replace:
        chosen = [f for f in chosen if f not in skeletons]
    own = {name: (m.indices, m.joint_names) for name, m in info.skeletons.items() if m.indices is not None}
    rows = encoder_rows(acae, joint_names, own)
    skeletons.update(skeleton_mappings(acae, len(joint_names), rows, chosen))
    meta['skeletons'] = json.dumps(skeletons)
    meta['acae'] = json.dumps({'file': os.path.basename(acae_path), 'formats': chosen,
                               'num_latents': acae.num_latents})
    del model.metadata_props[:]
    for key, value in meta.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(model, out_path)
    load_model_info(out_path)
    return chosen


def load_model_info(path: str):
    from metrabs_ros.model_contract import read_pose_model_info
    from metrabs_ros.onnx_backend import create_session
    return read_pose_model_info(create_session(path, backend='cpu'), path)
