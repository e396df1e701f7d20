"""TensorRT 10/11 ONNX-parser support rules, encoded from onnx-tensorrt's operator support matrix (data only).

Source: github.com/onnx/onnx-tensorrt, ``docs/operators.md`` ("Supported ONNX Operators"), read in two versions:

* TensorRT 10.15 (header: operators of opsets 9 to 24; the newest version available to us, a stored copy of the
  file, commit not recorded by the store) — the main source of the types and restrictions below;
* TensorRT 10.1 GA, commit 96e781103cfc4adf4a6bb557e94bac8e693f6f4c (2024-06-17, tag ``10.1-GA``; the file
  still says "TensorRT 10.0 supports ... opset 9 to opset 20") — for what older TensorRT 10 releases lack
  (``SINCE_10_15``, ``AXES_INITIALIZER_BEFORE_10_15``, the opset ceiling 20).

Where the matrix is silent, the rule says so and names the place in the importer source of the same 10.1-GA commit
(``onnxOpImporters.cpp``) it was read from: the GridSample mode names, the Resize attributes the importer never
reads, shape-only consumers of UINT8 tensors. No TensorRT 11 matrix was available: TensorRT 11's parser is assumed
to accept what 10.15 documents (its difference that matters here is strong typing, docs/gpu.md).

Type names follow the matrix: FP32, FP16, BF16, INT32, INT64, BOOL, UINT8, INT8, FP8, FP4, INT4.
"""

MATRIX_SOURCE = ('onnx/onnx-tensorrt docs/operators.md, TensorRT 10.15 (opset 9-24); '
                 'cross-checked with tag 10.1-GA, commit 96e781103cfc4adf4a6bb557e94bac8e693f6f4c (opset 9-20)')

OPSET_MIN = 9
OPSET_MAX_10_0 = 20   # TensorRT 10.0 / 10.1 matrix
OPSET_MAX = 24        # TensorRT 10.15 matrix

# ONNX TensorProto element types -> matrix names (None: not a TensorRT type at all).
ONNX_TYPE_NAMES = {1: 'FP32', 2: 'UINT8', 3: 'INT8', 4: 'UINT16', 5: 'INT16', 6: 'INT32', 7: 'INT64', 8: 'STRING',
                   9: 'BOOL', 10: 'FP16', 11: 'DOUBLE', 12: 'UINT32', 13: 'UINT64', 14: 'COMPLEX64',
                   15: 'COMPLEX128', 16: 'BF16', 17: 'FP8', 18: 'FP8', 19: 'FP8', 20: 'FP8', 21: 'UINT4', 22: 'INT4',
                   23: 'FP4'}
TRT_TENSOR_TYPES = frozenset({'FP32', 'FP16', 'BF16', 'INT32', 'INT64', 'BOOL', 'UINT8', 'INT8', 'FP8', 'FP4',
                              'INT4', 'DOUBLE'})
QUANTIZED_TYPES = frozenset({'INT8', 'FP8', 'FP4', 'INT4'})  # only through Q/DQ from a wider float type

_F = ('FP32', 'FP16', 'BF16')
_FI = _F + ('INT32', 'INT64')
_FIB = _FI + ('BOOL',)
_F2 = ('FP32', 'FP16')


def _table(*groups):
    out = {}
    for types, names in groups:
        for name in names.split():
            out[name] = frozenset(types)
    return out


# Operators the matrix marks supported, with the types of their data tensors.
SUPPORTED_TYPES = _table(
    (_F, 'Acos Acosh Asin Asinh Atan Atanh AveragePool BatchNormalization Ceil Celu Clip Conv ConvTranspose Cos '
         'Cosh CumSum Dropout Einsum Elu Erf Exp Floor Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool '
         'GroupNormalization GRU HardSigmoid HardSwish Hardmax ImageScaler InstanceNormalization IsInf '
         'LayerNormalization LeakyRelu Log LogSoftmax LRN LSTM LpNormalization LpPool MatMul MaxPool '
         'MeanVarianceNormalization ParametricSoftplus PRelu QuantizeLinear RandomNormal RandomNormalLike '
         'RandomUniform RandomUniformLike Reciprocal Resize RMSNormalization RNN RotaryEmbedding Round ScaledTanh '
         'Scan Selu Sigmoid Sin Sinh Softmax Softplus Softsign Sqrt Tan Tanh ThresholdedRelu Upsample'),
    (_FI, 'Abs Add ArgMax ArgMin DepthToSpace Div Equal Greater GreaterOrEqual IsNaN Less LessOrEqual Max Min Mod '
          'Mul Neg Pad Pow Range ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin '
          'ReduceProd ReduceSum ReduceSumSquare Relu Scatter ScatterElements ScatterND Shrink Sign SpaceToDepth Sub '
          'Sum TopK'),
    (_FIB, 'Concat Expand EyeLike Flatten Gather GatherElements GatherND Identity If Loop OneHot Reshape '
           'ReverseSequence Shape Size Slice Split Squeeze Tile Transpose Trilu Unsqueeze Where'),
    (_FI + ('UINT8', 'BOOL'), 'Cast CastLike'),
    (_FIB + ('FP8', 'FP4', 'INT4'), 'Constant ConstantOfShape'),
    (_F + ('FP8', 'INT32', 'INT64'), 'Mean'),
    (_F + ('INT8', 'INT32', 'INT64'), 'Gelu'),
    (_F + ('INT8', 'FP8'), 'Attention'),
    (_F + ('INT32',), 'TensorScatter'),
    (('INT8', 'FP8', 'FP4', 'INT4'), 'DequantizeLinear'),
    (('BOOL',), 'And Or Xor Not'),
    (_F2, 'BlackmanWindow HammingWindow HannWindow DeformConv GridSample Mish NonMaxSuppression NonZero RoiAlign'),
    (('FP32',), 'STFT'),
)

# Operators the matrix marks unsupported (N).
UNSUPPORTED = frozenset((
    'AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor Col2Im CenterCropPad Compress '
    'ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear ImageDecoder MatMulInteger MaxRoiPool MaxUnpool '
    'MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional OptionalGetElement OptionalHasElement '
    'QLinearConv QLinearMatMul RegexFullMatch SequenceAt SequenceConstruct SequenceEmpty SequenceErase '
    'SequenceInsert SequenceLength SequenceMap SoftmaxCrossEntropyLoss SplitToSequence StringConcat '
    'StringNormalizer StringSplit TfIdfVectorizer Unique').split())

# Supported in the 10.15 matrix but unsupported or absent in 10.1 GA.
SINCE_10_15 = frozenset('Attention BlackmanWindow HammingWindow HannWindow RMSNormalization RotaryEmbedding STFT '
                        'TensorScatter'.split())

# Which inputs carry the data whose type the matrix lists (default: input 0). 'all' = every input.
TYPED_INPUTS = {
    **{op: 'all' for op in 'Add Sub Mul Div Pow Mod Max Min Mean Sum Equal Greater GreaterOrEqual Less LessOrEqual '
                          'And Or Xor Concat PRelu MatMul Gemm Einsum'.split()},
    'Where': (1, 2), 'GridSample': (0, 1), 'ScatterND': (0, 2), 'ScatterElements': (0, 2), 'Scatter': (0, 2),
    'Range': (0, 1, 2), 'ConstantOfShape': (), 'Constant': (), 'EyeLike': (0,), 'OneHot': (2,),
}
# Ops that read only the shape of their input (the 10.1 importer of Shape/Size checks no type).
SHAPE_ONLY = frozenset({'Shape', 'Size'})

# Inputs that must be build-time constants (initializers / Constant nodes): op -> {input index: rule text}.
CONSTANT_INPUTS = {
    **{op: {1: '`axes` must be an initializer'} for op in (
        'ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum '
        'ReduceSumSquare').split()},
    'Squeeze': {1: '`axes` must be resolvable to a constant'},
    'Unsqueeze': {1: '`axes` must be resolvable to a constant'},
    'CumSum': {1: '`axis` must be a build-time constant'},
    'OneHot': {1: '`depth` must be a build-time constant'},
    'STFT': {1: '`frame_step` must be an initializer', 2: '`window` must be an initializer'},
    'Dropout': {2: '`is_training` must be an initializer (and false)'},
}
# Constant-input rules of the 10.0/10.1 matrix that 10.15 dropped (reported as limits).
AXES_INITIALIZER_BEFORE_10_15 = {'Pad': 3, 'Slice': 3}

# Attribute rules.
GRIDSAMPLE_MODES = frozenset({'bilinear', 'nearest', 'bicubic'})     # names the 10.1 importer compares against
GRIDSAMPLE_PADDING = frozenset({'zeros', 'border', 'reflection'})
RESIZE_MODES = frozenset({'nearest', 'linear'})
RESIZE_COORDINATE_MODES = frozenset({'half_pixel', 'pytorch_half_pixel', 'tf_half_pixel_for_nn', 'asymmetric',
                                     'align_corners'})
RESIZE_NEAREST_MODES = frozenset({'floor', 'ceil', 'round_prefer_floor', 'round_prefer_ceil'})
TOPK_MAX_K = 3840   # K must be less than this

# Outputs whose shape depends on tensor values (TensorRT: data-dependent shapes -> IOutputAllocator, no CUDA graph).
DATA_DEPENDENT_OUTPUT_OPS = frozenset({'NonZero', 'NonMaxSuppression', 'Unique', 'Compress'})
# Inputs that determine an output shape: op -> input indices (a value-dependent tensor here = data-dependent shape).
SHAPE_INPUTS = {
    'Reshape': (1,), 'Expand': (1,), 'ConstantOfShape': (0,), 'Tile': (1,), 'Range': (0, 1, 2),
    'Resize': (2, 3), 'Upsample': (1,), 'Slice': (1, 2, 4), 'Pad': (1,), 'TopK': (1,), 'OneHot': (1,),
    'Squeeze': (1,), 'Unsqueeze': (1,), 'Split': (1,), 'CenterCropPad': (1,),
}
CONTROL_FLOW = {
    'If': 'conditional: the two branches\' outputs must have the same rank and different names',
    'Loop': 'loop: scan outputs may not have a dynamic length and loop-carried tensors must keep their shape',
    'Scan': 'scan: TensorRT builds it as a loop (same limits as Loop)',
}
