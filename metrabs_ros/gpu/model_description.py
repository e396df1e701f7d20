"""Inputs, outputs and metadata of an ONNX file, shaped like ONNX Runtime's session API.

Backends that do not run the model through ONNX Runtime (TensorRT, PyTorch) still answer ``get_inputs()``,
``get_outputs()`` and ``get_modelmeta().custom_metadata_map`` with these objects, so that
``model_contract.read_pose_model_info`` and ``detection.PersonDetector`` accept them unchanged.
The file is read with ``onnx`` (protobuf only, weights not needed) when it is installed, else through an ONNX
Runtime CPU session.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Tuple, Union

# ONNX TensorProto element types -> ONNX Runtime type strings.
_ONNX_TYPES = {1: 'tensor(float)', 2: 'tensor(uint8)', 3: 'tensor(int8)', 5: 'tensor(int16)', 6: 'tensor(int32)',
               7: 'tensor(int64)', 9: 'tensor(bool)', 10: 'tensor(float16)', 11: 'tensor(double)',
               16: 'tensor(bfloat16)'}


@dataclasses.dataclass(frozen=True)
class TensorArg:
    """One graph input or output: ``shape`` holds ints for static dims and the symbol (str) for dynamic ones."""
    name: str
    shape: Tuple[Union[int, str], ...]
    type: str


@dataclasses.dataclass(frozen=True)
class ModelMeta:
    custom_metadata_map: Dict[str, str]


@dataclasses.dataclass(frozen=True)
class ModelDescription:
    path: str
    inputs: Tuple[TensorArg, ...]
    outputs: Tuple[TensorArg, ...]
    metadata: Dict[str, str]

    def get_inputs(self) -> List[TensorArg]:
        return list(self.inputs)

    def get_outputs(self) -> List[TensorArg]:
        return list(self.outputs)

    def get_modelmeta(self) -> ModelMeta:
        return ModelMeta(dict(self.metadata))

    @property
    def input_dims(self) -> Dict[str, Tuple[Union[int, str], ...]]:
        return {t.name: t.shape for t in self.inputs}

    @property
    def precision(self) -> str:
        """'fp16' when the exporter marked the file as the FP16 variant (metadata ``precision``), else 'fp32'."""
        return 'fp16' if str(self.metadata.get('precision', 'fp32')).lower() == 'fp16' else 'fp32'


def _dims_from_onnx(value_info) -> Tuple[Union[int, str], ...]:
    dims = []
    for i, d in enumerate(value_info.type.tensor_type.shape.dim):
        if d.HasField('dim_value'):
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or f'{value_info.name}_dim{i}')
    return tuple(dims)


def describe_onnx(path) -> ModelDescription:
    """ModelDescription of the ONNX file at ``path`` (raises FileNotFoundError / ValueError naming the file)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'model file not found: {path}')
    try:
        import onnx
    except ImportError:
        return _describe_with_onnxruntime(path)
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as error:  # protobuf DecodeError and friends
        raise ValueError(f'cannot read ONNX model {path}: {type(error).__name__}: {error}') from error
    initializers = {i.name for i in model.graph.initializer}
    inputs = tuple(TensorArg(v.name, _dims_from_onnx(v), _ONNX_TYPES.get(v.type.tensor_type.elem_type, 'unknown'))
                   for v in model.graph.input if v.name not in initializers)
    outputs = tuple(TensorArg(v.name, _dims_from_onnx(v), _ONNX_TYPES.get(v.type.tensor_type.elem_type, 'unknown'))
                    for v in model.graph.output)
    return ModelDescription(path, inputs, outputs, {p.key: p.value for p in model.metadata_props})


def _describe_with_onnxruntime(path: str) -> ModelDescription:
    from metrabs_ros.onnx_backend import create_session
    session = create_session(path, providers=['CPUExecutionProvider'], num_threads=1)

    def args(items):
        return tuple(TensorArg(a.name, tuple(d if isinstance(d, int) else str(d) for d in a.shape), a.type)
                     for a in items)
    return ModelDescription(path, args(session.get_inputs()), args(session.get_outputs()),
                            dict(session.get_modelmeta().custom_metadata_map))


def onnx_node_names(path) -> List[Tuple[str, str]]:
    """``(name, op_type)`` of every node of the main graph in file order (for parser error messages)."""
    import onnx
    model = onnx.load(os.fspath(path), load_external_data=False)
    return [(n.name, n.op_type) for n in model.graph.node]


class SessionLike:
    """The ``onnxruntime.InferenceSession`` query methods (what ``read_pose_model_info`` and ``PersonDetector``
    call) for a backend whose ``description`` answers them (a ModelDescription or an ORT session) and whose
    ``providers`` lists its display labels."""

    description = None
    providers: List[str] = []

    def get_inputs(self):
        return self.description.get_inputs()

    def get_outputs(self):
        return self.description.get_outputs()

    def get_modelmeta(self):
        return self.description.get_modelmeta()

    def get_providers(self) -> List[str]:
        return list(self.providers)
