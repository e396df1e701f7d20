"""Pure decisions of the TensorRT path (no tensorrt import): optimisation-profile shapes, precision per TensorRT
major version, FP16 ONNX variant lookup and readable parser errors. Tested everywhere.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

Shape = Tuple[int, ...]
DimRange = Tuple[int, int, int]          # (min, opt, max)
ProfileShapes = Dict[str, Tuple[Shape, Shape, Shape]]

MIN_TENSORRT_MAJOR = 10
#: Dimension symbols of the pose contract (docs/model_contract.md) and of the native detector contract.
POSE_DIMS = ('P', 'A', 'H', 'W')
#: Alias symbols that exporters use for the same image dimensions.
DIM_ALIASES = {'height': 'H', 'width': 'W', 'h': 'H', 'w': 'W', 'num_people': 'P', 'num_aug': 'A'}


class PrecisionUnavailable(ValueError):
    """The requested precision cannot be built with this TensorRT version and these ONNX files."""


class UnsupportedTensorRT(RuntimeError):
    """TensorRT older than 10 (implicit batch / binding API): not supported."""


def tensorrt_major(version: str) -> int:
    """Major version from a ``tensorrt.__version__`` string such as '10.13.0.35' or '11.4.1'."""
    try:
        return int(str(version).split('.')[0])
    except ValueError:
        raise ValueError(f'cannot read a TensorRT version from {version!r}') from None


# --- optimisation profiles ----------------------------------------------------------------------------------

def pose_dim_ranges(max_people: int = 8, num_augs: Sequence[int] = (1, 5), image_sizes_hw: Sequence = ((480, 640),),
                    opt_people: Optional[int] = None, allow_windows: bool = False,
                    min_window_px: int = 4) -> Dict[str, DimRange]:
    """(min, opt, max) of the dynamic dimensions P, A, H, W of the pose contract.

    max_people: most boxes in one call (P). num_augs: the augmentation counts in use (A from 1 to the largest; opt =
    the first listed). image_sizes_hw: the frame sizes in use; opt = the first. allow_windows: the estimator feeds only
    the image window that the crops sample (``PoseEstimator.crop_to_window``), so H and W go down to
    ``min_window_px``; otherwise down to the smallest frame. opt_people: default min(3, max_people).
    """
    if max_people < 1:
        raise ValueError(f'max_people must be >= 1, got {max_people}')
    num_augs = [int(a) for a in num_augs]
    if not num_augs or min(num_augs) < 1:
        raise ValueError(f'num_augs must list counts >= 1, got {num_augs}')
    sizes = [(int(h), int(w)) for h, w in image_sizes_hw]
    if not sizes or min(min(s) for s in sizes) < 1:
        raise ValueError(f'image_sizes_hw must list positive (H, W), got {image_sizes_hw}')
    heights = [h for h, _ in sizes]
    widths = [w for _, w in sizes]
    opt_people = min(3, max_people) if opt_people is None else int(opt_people)
    if not 1 <= opt_people <= max_people:
        raise ValueError(f'opt_people {opt_people} outside 1..{max_people}')
    min_h = min(min_window_px, min(heights)) if allow_windows else min(heights)
    min_w = min(min_window_px, min(widths)) if allow_windows else min(widths)
    return {'P': (1, opt_people, int(max_people)),
            'A': (1, num_augs[0], max(num_augs)),
            'H': (min_h, sizes[0][0], max(heights)),
            'W': (min_w, sizes[0][1], max(widths))}


def profile_shapes(input_dims: Mapping[str, Sequence[Union[int, str]]],
                   dim_ranges: Mapping[str, DimRange]) -> ProfileShapes:
    """Optimisation-profile (min, opt, max) shapes for every input with a dynamic dimension.

    input_dims: input name -> dims (ints static, strings dynamic symbols, as in ModelDescription.input_dims).
    dim_ranges: symbol -> (min, opt, max); aliases (``height`` -> H, ...) are resolved. Static inputs are omitted
    (TensorRT needs no profile for them). Raises ValueError naming the input and symbol that have no range.
    """
    out: ProfileShapes = {}
    for name, dims in input_dims.items():
        if all(isinstance(d, int) and d >= 0 for d in dims):
            continue
        lo, opt, hi = [], [], []
        for i, d in enumerate(dims):
            if isinstance(d, int) and d >= 0:
                lo.append(d), opt.append(d), hi.append(d)
                continue
            symbol = DIM_ALIASES.get(str(d), str(d))
            if symbol not in dim_ranges:
                raise ValueError(f'input {name!r} dimension {i} is dynamic ({d!r}) and has no range; give one with '
                                 f'--dim {d}=MIN:OPT:MAX (known: {", ".join(sorted(dim_ranges))})')
            r = dim_ranges[symbol]
            if not (1 <= r[0] <= r[1] <= r[2]):
                raise ValueError(f'range of {symbol!r} must satisfy 1 <= min <= opt <= max, got {r}')
            lo.append(int(r[0])), opt.append(int(r[1])), hi.append(int(r[2]))
        out[name] = (tuple(lo), tuple(opt), tuple(hi))
    return out


def parse_dim_override(text: str) -> Tuple[str, DimRange]:
    """'H=240:480:1080' -> ('H', (240, 480, 1080)); 'P=8' -> ('P', (8, 8, 8))."""
    try:
        name, values = text.split('=', 1)
        parts = [int(v) for v in values.split(':')]
    except ValueError:
        raise ValueError(f'dimension range must look like NAME=MIN:OPT:MAX, got {text!r}') from None
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3:
        raise ValueError(f'dimension range must look like NAME=MIN:OPT:MAX, got {text!r}')
    return name.strip(), (parts[0], parts[1], parts[2])


def shape_within_profile(shapes: Mapping[str, Shape], profile: ProfileShapes) -> List[str]:
    """Problems (empty if none) of running ``shapes`` on an engine built with ``profile``."""
    problems = []
    for name, (lo, _, hi) in profile.items():
        if name not in shapes:
            continue
        shape = tuple(int(s) for s in shapes[name])
        if len(shape) != len(lo) or any(s < a or s > b for s, a, b in zip(shape, lo, hi)):
            problems.append(f'{name} {shape} outside the engine profile {lo}..{hi}')
    return problems


# --- precision ------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PrecisionPlan:
    """How to build: which ONNX file, strongly typed or not, which builder flags.

    precision: 'fp32' or 'fp16' (what the engine computes the backbone in).
    strongly_typed: network created strongly typed (types come from the ONNX file; always on TensorRT >= 11).
    fp16_flag: set BuilderFlag.FP16 (TensorRT 10 weakly typed FP16 only).
    disable_tf32: clear BuilderFlag.TF32 so that FP32 engines compute FP32 convolutions (agreement within 1 mm).
    onnx_path: the ONNX file to parse. note: one line explaining the choice (logged).
    """
    precision: str
    strongly_typed: bool
    fp16_flag: bool
    disable_tf32: bool
    onnx_path: str
    note: str


def fp16_variant_candidates(onnx_path) -> List[str]:
    """Where the FP16 export of ``X.onnx`` is looked for: X.fp16.onnx, X_fp16.onnx, X-fp16.onnx (same folder)."""
    root, _ = os.path.splitext(os.fspath(onnx_path))
    return [f'{root}.fp16.onnx', f'{root}_fp16.onnx', f'{root}-fp16.onnx']


def plan_precision(requested: str, trt_major: int, onnx_path: str, onnx_precision: str = 'fp32',
                   fp16_onnx_path: Optional[str] = None, fp16_onnx_precision: Optional[str] = None) -> PrecisionPlan:
    """Choose the build recipe.

    requested: 'fp32', 'fp16' or 'auto' (FP16 when it can be built, else FP32).
    trt_major: TensorRT major version (10 or 11+; older raises UnsupportedTensorRT).
    onnx_path / onnx_precision: the given ONNX file and its metadata ``precision`` ('fp16' for the FP16 export).
    fp16_onnx_path / fp16_onnx_precision: an FP16 variant found beside it (see fp16_variant_candidates), or None.

    TensorRT 11 removed BuilderFlag.FP16 and weak typing: FP16 needs the FP16 ONNX variant (``metrabs-ros export
    --fp16``), whose casts keep the warp, soft-argmax and 3×3 solve in FP32. TensorRT 10 builds that variant
    strongly typed as well, and otherwise falls back to the FP16 builder flag on the FP32 file (TensorRT then picks
    layer precisions itself, the sensitive ops included).
    """
    if requested not in ('fp32', 'fp16', 'auto'):
        raise ValueError(f"precision must be 'fp32', 'fp16' or 'auto', got {requested!r}")
    if trt_major < MIN_TENSORRT_MAJOR:
        raise UnsupportedTensorRT(f'TensorRT {trt_major}.x is not supported (explicit-batch name-based API of '
                                  f'TensorRT >= {MIN_TENSORRT_MAJOR} required)')
    typed_always = trt_major >= 11
    onnx_path = os.fspath(onnx_path)
    if onnx_precision == 'fp16':
        if requested == 'fp32':
            raise PrecisionUnavailable(f'{onnx_path} is the FP16 export (metadata precision=fp16); build FP32 from '
                                       'the FP32 export')
        return PrecisionPlan('fp16', True, False, False, onnx_path,
                             f'FP16 ONNX file, strongly typed network (TensorRT {trt_major})')
    if requested == 'fp32':
        return PrecisionPlan('fp32', typed_always, False, True, onnx_path,
                             f'FP32{" strongly typed" if typed_always else ""}, TF32 off (TensorRT {trt_major})')
    if fp16_onnx_path is not None and (fp16_onnx_precision in (None, 'fp16')):
        return PrecisionPlan('fp16', True, False, False, os.fspath(fp16_onnx_path),
                             f'FP16 variant {os.path.basename(fp16_onnx_path)}, strongly typed network '
                             f'(TensorRT {trt_major})')
    if not typed_always:
        return PrecisionPlan('fp16', False, True, False, onnx_path,
                             'TensorRT 10: FP32 ONNX with BuilderFlag.FP16 (weakly typed; export --fp16 for an FP16 '
                             'file that keeps soft-argmax and the solve in FP32)')
    message = (f'TensorRT {trt_major} builds only strongly typed networks, so FP16 needs the FP16 ONNX export '
               f'(`metrabs-ros export CHECKPOINT --fp16 --out ...`); none found for {onnx_path} (looked for '
               f'{", ".join(os.path.basename(p) for p in fp16_variant_candidates(onnx_path))})')
    if requested == 'fp16':
        raise PrecisionUnavailable(message)
    return PrecisionPlan('fp32', True, False, True, onnx_path, message + '; building FP32')


# --- parser errors --------------------------------------------------------------------------------------------

def format_parser_error(desc: str, node_index: int = -1, node_name: str = '', node_op: str = '', code: str = '',
                        onnx_nodes: Optional[Sequence[Tuple[str, str]]] = None) -> str:
    """One readable line for an ONNX parser error: which node (index, name, op) and what went wrong.

    onnx_nodes: ``(name, op_type)`` per node of the file (model_description.onnx_node_names), used to fill the
    name/op when the parser reports only the index (TensorRT < 10.1).
    """
    if onnx_nodes is not None and 0 <= node_index < len(onnx_nodes):
        node_name = node_name or onnx_nodes[node_index][0]
        node_op = node_op or onnx_nodes[node_index][1]
    where = []
    if node_index is not None and node_index >= 0:
        where.append(f'node #{node_index}')
    if node_name:
        where.append(repr(node_name))
    if node_op:
        where.append(f'(op {node_op})')
    location = ' '.join(where) if where else 'graph'
    suffix = f' [{code}]' if code else ''
    return f'ONNX {location}: {desc.strip()}{suffix}'


# --- sizes ----------------------------------------------------------------------------------------------------

def volume(shape: Iterable[int]) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out
