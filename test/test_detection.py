"""Person detection adapters, letterbox and NMS, through real ONNX Runtime sessions.

Each test model is a small ONNX graph that encodes KNOWN boxes in a detector layout (yolov5, yolov8, yolox raw
and decoded, end2end styles, native). Its scores are multiplied by a *gate* computed from the input tensor: the
gate is 1 only if the input pixels at hand-computed positions hold the expected pad value / image colour in the
expected channel order and value range, so wrong letterbox placement, channel order or scaling gives no
detections. Expected boxes in original pixels are computed here from the letterbox formula by hand.
"""

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from metrabs_ros.detection import FORMAT_NAMES, PersonDetector, letterbox, nms, resolve_layout
from metrabs_ros.detection.autodetect import TensorInfo

COLOR_RGB = (200, 100, 30)
PAD = 114
NUM_CLASSES = 3  # person, bicycle, car
CAR = 2

# name: (x1, y1, x2, y2) as fractions of the image width/height, person score, class
OBJECTS = {
    'p1': ((0.15, 0.10, 0.40, 0.85), 0.9, 0),
    'p2': ((0.62, 0.25, 0.80, 0.95), 0.8, 0),
    'p2dup': ((0.626, 0.254, 0.806, 0.954), 0.6, 0),  # IoU 0.925 with p2
    'p4_outside': ((-0.05, 0.20, 0.12, 0.55), 0.7, 0),  # sticks out on the left: clipped to x = 0
    'p3': ((0.03, 0.60, 0.14, 0.97), 0.45, 0),
    'car': ((0.45, 0.40, 0.95, 0.85), 0.95, CAR),
}
EXPECTED_ORDER = ['p1', 'p2', 'p4_outside', 'p3']  # threshold 0.3, NMS 0.7: p2dup suppressed, car not a person


# ---------------------------------------------------------------------------------------------- geometry by hand
def hand_letterbox(image_wh, target_hw, yolox=False):
    """(ratio, left, top, new_w, new_h) by the YOLOv5/v8 formula (centred, round) or YOLOX (top-left, floor)."""
    w, h = image_wh
    th, tw = target_hw
    r = min(th / h, tw / w)
    if yolox:
        new_w, new_h = math.floor(w * r + 1e-6), math.floor(h * r + 1e-6)
        return r, 0, 0, new_w, new_h
    new_w, new_h = round(w * r), round(h * r)
    return r, (tw - new_w) // 2, (th - new_h) // 2, new_w, new_h


def original_boxes(image_wh, names):
    w, h = image_wh
    return np.array([OBJECTS[n][0] for n in names], np.float64) * [w, h, w, h]


def letterbox_boxes(image_wh, target_hw, names, yolox=False):
    """Known boxes in letterboxed network pixels: x_lb = x * new_w / w + left (test sizes make new_w / w = r)."""
    w, h = image_wh
    r, left, top, new_w, new_h = hand_letterbox(image_wh, target_hw, yolox)
    scale = np.array([new_w / w, new_h / h] * 2)
    return original_boxes(image_wh, names) * scale + [left, top, left, top]


def expected_xywhs(image_wh, names):
    w, h = image_wh
    boxes = np.clip(original_boxes(image_wh, names), 0, [w, h, w, h])
    scores = [OBJECTS[n][1] for n in names]
    return np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2], scores])


def solid_image(image_wh):
    w, h = image_wh
    return np.broadcast_to(np.array(COLOR_RGB, np.uint8), (h, w, 3)).copy()


def assert_boxes(result, image_wh, names, atol_px=0.05):
    expected = expected_xywhs(image_wh, names)
    assert result.dtype == np.float32 and result.shape == (len(names), 5), (result, names)
    np.testing.assert_allclose(result[:, :4], expected[:, :4], atol=atol_px)
    np.testing.assert_allclose(result[:, 4], expected[:, 4], atol=1e-5)


# ---------------------------------------------------------------------------------------------- ONNX builders
def input_checks(image_wh, target_hw, yolox=False, layout='nchw'):
    """(flat index, expected value in 0..255 units) of network-input pixels that must hold pad or image colour."""
    th, tw = target_hw
    r, left, top, new_w, new_h = hand_letterbox(image_wh, target_hw, yolox)
    color = COLOR_RGB[::-1] if yolox else COLOR_RGB  # YOLOX feeds BGR
    mid_x, mid_y = left + new_w // 2, top + new_h // 2
    checks = [(0, top, left, color[0]), (2, top + new_h - 1, left + new_w - 1, color[2]), (1, mid_y, mid_x, color[1])]
    if top > 0:
        checks.append((0, top - 1, mid_x, PAD))
    if top + new_h < th:
        checks.append((1, top + new_h, mid_x, PAD))
    if left > 0:
        checks.append((0, mid_y, left - 1, PAD))
    if left + new_w < tw:
        checks.append((2, mid_y, left + new_w, PAD))
    assert len(checks) >= 4  # every test size pads at least one side
    if layout == 'nchw':
        return [(c * th * tw + y * tw + x, v) for c, y, x, v in checks]
    return [((y * tw + x) * 3 + c, v) for c, y, x, v in checks]


def build_model(path, input_info, outputs, checks, value_scale=1.0, metadata=None, opset=17):
    """Graph: gate = all(|input.flat[i] - v * value_scale| < tol); each output = A + B * gate (cast to dtype).

    ``input_info``: (name, elem_type, shape); ``outputs``: list of (name, A, B, elem_type, declared_shape or None).
    """
    name, elem_type, shape = input_info
    indices = np.array([i for i, _ in checks], np.int64)
    values = np.array([v * value_scale for _, v in checks], np.float32)
    inits = [numpy_helper.from_array(indices, 'gate_idx'), numpy_helper.from_array(values, 'gate_val'),
             numpy_helper.from_array(np.array([-1], np.int64), 'flat_shape'),
             numpy_helper.from_array(np.array(0.25 * value_scale, np.float32), 'gate_tol')]
    nodes = [
        helper.make_node('Cast', [name], ['image_f'], to=TensorProto.FLOAT),
        helper.make_node('Reshape', ['image_f', 'flat_shape'], ['flat']),
        helper.make_node('Gather', ['flat', 'gate_idx'], ['picked']),
        helper.make_node('Sub', ['picked', 'gate_val'], ['diff']),
        helper.make_node('Abs', ['diff'], ['absdiff']),
        helper.make_node('Less', ['absdiff', 'gate_tol'], ['ok']),
        helper.make_node('Cast', ['ok'], ['okf'], to=TensorProto.FLOAT),
        helper.make_node('ReduceMin', ['okf'], ['gate'], keepdims=0),
    ]
    graph_outputs = []
    for out_name, a, b, out_type, declared in outputs:
        a = np.asarray(a, np.float32)
        b = np.zeros_like(a) if b is None else np.asarray(b, np.float32)
        inits += [numpy_helper.from_array(a, f'{out_name}_a'), numpy_helper.from_array(b, f'{out_name}_b')]
        nodes += [helper.make_node('Mul', [f'{out_name}_b', 'gate'], [f'{out_name}_bg']),
                  helper.make_node('Add', [f'{out_name}_a', f'{out_name}_bg'], [f'{out_name}_f'])]
        nodes.append(helper.make_node('Cast', [f'{out_name}_f'], [out_name], to=out_type)
                     if out_type != TensorProto.FLOAT else helper.make_node('Identity', [f'{out_name}_f'], [out_name]))
        graph_outputs.append(helper.make_tensor_value_info(out_name, out_type, declared or list(a.shape)))
    graph = helper.make_graph(nodes, 'test_detector', [helper.make_tensor_value_info(name, elem_type, shape)],
                              graph_outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', opset)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def yolo_grid_count(target_hw, strides=(8, 16, 32)):
    return sum((target_hw[0] // s) * (target_hw[1] // s) for s in strides)


def spread_indices(n, count):
    return np.linspace(3, n - 5, count).astype(int)


def yolov5_tables(image_wh, target_hw, names):
    """[1, N, 5+C] with N = 3 anchors x grid: A (boxes) and B (objectness and class probabilities)."""
    n = 3 * yolo_grid_count(target_hw)
    a, b = np.zeros([n, 5 + NUM_CLASSES]), np.zeros([n, 5 + NUM_CLASSES])
    boxes = letterbox_boxes(image_wh, target_hw, names)
    for row, name, box in zip(spread_indices(n, len(names)), names, boxes):
        _, score, cls = OBJECTS[name]
        a[row, :4] = [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]]
        b[row, 4] = 0.95
        b[row, 5:] = 0.01
        b[row, 5] = score / 0.95 if cls == 0 else 0.02
        b[row, 5 + cls] = max(b[row, 5 + cls], score / 0.95 if cls == 0 else 0.95)
    return a[None], b[None]


def yolov8_tables(image_wh, target_hw, names):
    """[1, 4+C, N] with N = grid: A (boxes) and B (class probabilities)."""
    n = yolo_grid_count(target_hw)
    a, b = np.zeros([4 + NUM_CLASSES, n]), np.zeros([4 + NUM_CLASSES, n])
    boxes = letterbox_boxes(image_wh, target_hw, names)
    for col, name, box in zip(spread_indices(n, len(names)), names, boxes):
        _, score, cls = OBJECTS[name]
        a[:4, col] = [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]]
        b[4:, col] = 0.01
        b[4, col] = score if cls == 0 else 0.02
        b[4 + cls, col] = max(b[4 + cls, col], score)
    return a[None], b[None]


YOLOX_LEVEL = {'p1': 32, 'p2': 16, 'p2dup': 8, 'p4_outside': 32, 'p3': 16, 'car': 32}


def yolox_tables(image_wh, target_hw, names, decoded):
    """[1, N, 5+C], one anchor per cell of the stride 8/16/32 grids (row-major, x fastest, stride 8 first).
    Raw: each box sits in the cell holding its centre at its level: raw_xy = c / s - cell, raw_wh = log(wh / s).
    Decoded: (raw_xy + cell) * s and exp(raw_wh) * s (background raw values 0, so cell * s and s)."""
    th, tw = target_hw
    n = yolo_grid_count(target_hw)
    raw, b = np.zeros([n, 5 + NUM_CLASSES]), np.zeros([n, 5 + NUM_CLASSES])
    b[:, 4] = 0.001
    level_start, cells, strides = {}, [], []
    start = 0
    for s in (8, 16, 32):
        level_start[s] = start
        for gy in range(th // s):
            for gx in range(tw // s):
                cells.append((gx, gy))
                strides.append(s)
        start += (th // s) * (tw // s)
    cells, strides = np.array(cells, np.float64), np.array(strides, np.float64)[:, None]
    boxes = letterbox_boxes(image_wh, target_hw, names, yolox=True)
    for name, box in zip(names, boxes):
        _, score, cls = OBJECTS[name]
        s = YOLOX_LEVEL[name]
        cx, cy, w, h = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]
        gx, gy = min(max(int(cx // s), 0), tw // s - 1), min(max(int(cy // s), 0), th // s - 1)
        row = level_start[s] + gy * (tw // s) + gx
        assert b[row, 4] < 0.5, 'two test boxes in one cell'
        raw[row, :4] = [cx / s - gx, cy / s - gy, math.log(w / s), math.log(h / s)]
        b[row, 4] = 0.95
        b[row, 5:] = 0.01
        b[row, 5] = score / 0.95 if cls == 0 else 0.02
        b[row, 5 + cls] = max(b[row, 5 + cls], score / 0.95 if cls == 0 else 0.95)
    a = raw.copy()
    if decoded:
        a[:, :2] = (raw[:, :2] + cells) * strides
        a[:, 2:4] = np.exp(raw[:, 2:4]) * strides
    return a[None], b[None]


def end2end_rows(image_wh, target_hw, names):
    boxes = letterbox_boxes(image_wh, target_hw, names)
    scores = np.array([OBJECTS[n][1] for n in names])
    classes = np.array([OBJECTS[n][2] for n in names])
    return boxes, scores, classes


def yolo_model(tmp_path, fmt, image_wh, target_hw=(320, 320), names=tuple(OBJECTS), metadata=None,
               declared=None, input_type=TensorProto.FLOAT, layout='nchw', decoded=False):
    th, tw = target_hw
    yolox = fmt == 'yolox'
    if fmt == 'yolov5':
        a, b = yolov5_tables(image_wh, target_hw, list(names))
    elif fmt == 'yolov8':
        a, b = yolov8_tables(image_wh, target_hw, list(names))
    else:
        a, b = yolox_tables(image_wh, target_hw, list(names), decoded)
    shape = [1, 3, th, tw] if layout == 'nchw' else [1, th, tw, 3]
    out_name = 'output' if yolox else 'output0'
    return build_model(tmp_path / f'{fmt}.onnx', ('images', input_type, shape),
                       [(out_name, a, b, TensorProto.FLOAT, declared)],
                       input_checks(image_wh, target_hw, yolox, layout), 1.0 if yolox else 1 / 255, metadata)


# ---------------------------------------------------------------------------------------------- YOLO families
@pytest.mark.parametrize('image_wh', [(640, 480), (480, 640), (1280, 720)])
@pytest.mark.parametrize('fmt', ['yolov5', 'yolov8'])
def test_ultralytics_layouts(tmp_path, fmt, image_wh):
    detector = PersonDetector(yolo_model(tmp_path, fmt, image_wh))
    assert detector.format == fmt and detector.input_hw == (320, 320)
    assert_boxes(detector.detect(solid_image(image_wh)), image_wh, EXPECTED_ORDER)


@pytest.mark.parametrize('image_wh', [(640, 480), (480, 640), (1280, 720)])
@pytest.mark.parametrize('decoded', [False, True])
def test_yolox_raw_and_decoded(tmp_path, image_wh, decoded):
    path = yolo_model(tmp_path, 'yolox', image_wh, decoded=decoded)
    detector = PersonDetector(path)  # decoded-ness from the probe run
    assert detector.format == 'yolox' and detector.layout.yolox_decoded == decoded
    assert_boxes(detector.detect(solid_image(image_wh)), image_wh, EXPECTED_ORDER)
    # the explicit option agrees; the wrong one gives different boxes
    assert_boxes(PersonDetector(path, yolox_decoded=decoded).detect(solid_image(image_wh)), image_wh,
                 EXPECTED_ORDER)
    wrong = PersonDetector(path, yolox_decoded=not decoded).detect(solid_image(image_wh))
    assert wrong.shape != (4, 5) or not np.allclose(wrong[:, :4], expected_xywhs(image_wh, EXPECTED_ORDER)[:, :4],
                                                    atol=1)


def test_yolox_metadata_flag_and_640_input(tmp_path):
    image_wh = (1280, 720)
    path = yolo_model(tmp_path, 'yolox', image_wh, target_hw=(640, 640), decoded=True,
                      metadata={'yolox_decoded': 'true'})
    detector = PersonDetector(path)
    assert detector.layout.yolox_decoded and 'probe' not in detector.layout.reason
    assert_boxes(detector.detect(solid_image(image_wh)), image_wh, EXPECTED_ORDER)


def test_640_input_and_rectangular_input(tmp_path):
    image_wh = (1280, 720)
    detector = PersonDetector(yolo_model(tmp_path, 'yolov5', image_wh, target_hw=(640, 640)))
    assert detector.format == 'yolov5' and detector.input_hw == (640, 640)
    assert_boxes(detector.detect(solid_image(image_wh)), image_wh, EXPECTED_ORDER)
    detector = PersonDetector(yolo_model(tmp_path, 'yolov8', (640, 480), target_hw=(256, 320)))
    assert detector.format == 'yolov8' and detector.input_hw == (256, 320)
    assert_boxes(detector.detect(solid_image((640, 480))), (640, 480), EXPECTED_ORDER)


def test_threshold_max_detections_and_nms_threshold(tmp_path):
    image_wh = (640, 480)
    detector = PersonDetector(yolo_model(tmp_path, 'yolov8', image_wh))
    image = solid_image(image_wh)
    assert_boxes(detector.detect(image, threshold=0.5), image_wh, ['p1', 'p2', 'p4_outside'])
    assert_boxes(detector.detect(image, max_detections=2), image_wh, ['p1', 'p2'])
    assert_boxes(detector.detect(image, max_detections=-1), image_wh, EXPECTED_ORDER)
    assert detector.detect(image, max_detections=0).shape == (0, 5)
    assert detector.detect(image, threshold=0.99).shape == (0, 5)
    # a looser NMS keeps the duplicate (IoU 0.925): it is NMS that removed it
    assert_boxes(detector.detect(image, nms_iou_threshold=0.95), image_wh,
                 ['p1', 'p2', 'p4_outside', 'p2dup', 'p3'])


def test_wrong_preprocessing_is_detected_by_the_gate(tmp_path):
    # forcing YOLOX preprocessing on an ultralytics export breaks the input checks -> nothing detected
    path = yolo_model(tmp_path, 'yolov8', (640, 480))
    assert PersonDetector(path, preprocessing='yolox').detect(solid_image((640, 480))).shape == (0, 5)


def test_nhwc_float16_input_and_dynamic_output_shape(tmp_path):
    image_wh = (480, 640)
    path = yolo_model(tmp_path, 'yolov8', image_wh, layout='nhwc', input_type=TensorProto.FLOAT16,
                      declared=['batch', 'channels', 'anchors'])
    detector = PersonDetector(path)  # output dims unknown until the probe run
    assert detector.format == 'yolov8' and detector.layout.input_layout == 'nhwc'
    assert_boxes(detector.detect(solid_image(image_wh)), image_wh, EXPECTED_ORDER)


def test_dynamic_input_size_from_ultralytics_imgsz_metadata(tmp_path):
    image_wh = (1280, 720)
    a, b = yolov5_tables(image_wh, (320, 320), list(OBJECTS))
    path = build_model(tmp_path / 'dyn.onnx', ('images', TensorProto.FLOAT, ['batch', 3, 'height', 'width']),
                       [('output0', a, b, TensorProto.FLOAT, ['batch', 'anchors', 8])],
                       input_checks(image_wh, (320, 320)), 1 / 255,
                       {'stride': '32', 'imgsz': '[320, 320]', 'names': "{0: 'person', 1: 'bicycle', 2: 'car'}"})
    detector = PersonDetector(path)  # 320 from imgsz; N = 3 x grid(320) learnt from a probe run
    assert detector.format == 'yolov5' and detector.input_hw == (320, 320)
    assert_boxes(detector.detect(solid_image(image_wh)), image_wh, EXPECTED_ORDER)


@pytest.mark.parametrize('source', ['argument', 'person_class', 'names'])
def test_person_class_override(tmp_path, source):
    # the car (class 2) becomes "the person" and the persons (class 0) are ignored
    image_wh = (640, 480)
    metadata = {'person_class': '2'} if source == 'person_class' else {}
    if source == 'names':
        metadata = {'stride': '32', 'names': "{0: 'cyclist', 1: 'bicycle', 2: 'person'}"}
    path = yolo_model(tmp_path, 'yolov8', image_wh, metadata=metadata)
    detector = PersonDetector(path, person_class=2 if source == 'argument' else None)
    assert detector.person_class == 2
    result = detector.detect(solid_image(image_wh))
    assert result.shape == (1, 5)
    np.testing.assert_allclose(result[0, :4], expected_xywhs(image_wh, ['car'])[0, :4], atol=0.05)
    np.testing.assert_allclose(result[0, 4], 0.95, atol=1e-5)


# ---------------------------------------------------------------------------------------------- end-to-end
def end2end_model(tmp_path, style, image_wh, target_hw=(320, 320)):
    names = list(OBJECTS)
    boxes, scores, classes = end2end_rows(image_wh, target_hw, names)
    k = 10
    pad = k - len(names)
    # slots past the valid count hold a high-scoring "person" that only EfficientNMS' num_dets invalidates
    boxes_k = np.vstack([boxes, np.tile([[10, 10, 200, 200]], (pad, 1))])
    scores_k = np.concatenate([scores, np.full(pad, 0.99 if style == 'efficient_nms' else 0.0)])
    classes_k = np.concatenate([classes, np.zeros(pad)])
    checks = input_checks(image_wh, target_hw)
    if style == 'named':
        outputs = [('boxes', boxes_k[None], None, TensorProto.FLOAT, None),
                   ('scores', np.zeros([1, k]), scores_k[None], TensorProto.FLOAT, None),
                   ('classes', classes_k[None], None, TensorProto.INT64, None)]
    elif style == 'efficient_nms':
        outputs = [('num_dets', np.zeros([1, 1]), [[len(names)]], TensorProto.INT32, None),
                   ('det_boxes', boxes_k[None], None, TensorProto.FLOAT, None),
                   ('det_scores', np.zeros([1, k]), scores_k[None], TensorProto.FLOAT, None),
                   ('det_classes', classes_k[None], None, TensorProto.INT32, None)]
    elif style == 'dets_labels':
        outputs = [('dets', np.column_stack([boxes_k, np.zeros(k)])[None],
                    np.column_stack([np.zeros([k, 4]), scores_k])[None], TensorProto.FLOAT, None),
                   ('labels', classes_k[None], None, TensorProto.INT64, None)]
    else:
        rows = np.zeros([300, 6])
        rows[:len(names), :4], rows[:len(names), 5] = boxes, classes
        b = np.zeros([300, 6])
        b[:len(names), 4] = scores
        outputs = [('output0', rows[None], b[None], TensorProto.FLOAT, None)]
    return build_model(tmp_path / f'e2e_{style}.onnx', ('images', TensorProto.FLOAT, [1, 3, *target_hw]), outputs,
                       checks, 1 / 255)


@pytest.mark.parametrize('style', ['named', 'efficient_nms', 'dets_labels', 'single'])
@pytest.mark.parametrize('image_wh', [(640, 480), (480, 640), (1280, 720)])
def test_end2end_styles(tmp_path, style, image_wh):
    detector = PersonDetector(end2end_model(tmp_path, style, image_wh))
    assert detector.format == 'end2end' and detector.layout.end2end_style == style
    assert_boxes(detector.detect(solid_image(image_wh)), image_wh, EXPECTED_ORDER)
    assert_boxes(detector.detect(solid_image(image_wh), max_detections=1), image_wh, ['p1'])


# ---------------------------------------------------------------------------------------------- native
def native_model(tmp_path, image_wh, metadata):
    w, h = image_wh
    names = list(OBJECTS)
    boxes = original_boxes(image_wh, names)
    scores = np.array([OBJECTS[n][1] if OBJECTS[n][2] == 0 else 0.05 for n in names])
    y, x = h // 2, w // 2
    checks = [((y * w + x) * 3 + 0, COLOR_RGB[0]), ((y * w + x) * 3 + 2, COLOR_RGB[2])]  # RGB order
    outputs = [('boxes_xyxy', boxes, None, TensorProto.FLOAT, ['N', 4]),
               ('scores', np.zeros(len(names)), scores, TensorProto.FLOAT, ['N'])]
    return build_model(tmp_path / 'native.onnx', ('image', TensorProto.UINT8, ['H', 'W', 3]), outputs, checks, 1.0,
                       metadata)


@pytest.mark.parametrize('metadata', [{'metrabs_ros.contract': 'detector/1'}, {}])
@pytest.mark.parametrize('image_wh', [(640, 480), (1280, 720)])
def test_native_contract(tmp_path, image_wh, metadata):
    detector = PersonDetector(native_model(tmp_path, image_wh, metadata))
    assert detector.format == 'native' and detector.input_hw is None
    assert_boxes(detector.detect(solid_image(image_wh)), image_wh, EXPECTED_ORDER)
    # BGR input fails the graph's channel check: no detections
    assert detector.detect(solid_image(image_wh)[..., ::-1].copy()).shape == (0, 5)


# ---------------------------------------------------------------------------------------------- errors
def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.onnx'):
        PersonDetector(tmp_path / 'missing.onnx')
    corrupt = tmp_path / 'corrupt.onnx'
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match='corrupt.onnx'):
        PersonDetector(corrupt)
    with pytest.raises(ValueError, match='not a file'):
        PersonDetector(tmp_path)


def test_unrecognisable_graph(tmp_path):
    outputs = [('foo', np.zeros([1, 10, 9]), None, TensorProto.FLOAT, None),
               ('bar', np.zeros([1, 10, 9]), None, TensorProto.FLOAT, None)]
    path = build_model(tmp_path / 'weird.onnx', ('images', TensorProto.FLOAT, [1, 3, 320, 320]), outputs,
                       [(0, 0)], 1.0)
    with pytest.raises(ValueError, match=r'weird\.onnx.*cannot recognise.*foo float\[1,10,9\].*bar'):
        PersonDetector(path)
    # a single [1, 10, 9] output: neither a YOLO anchor count nor a [1, N, 6] end-to-end layout
    path = build_model(tmp_path / 'weird1.onnx', ('images', TensorProto.FLOAT, [1, 3, 320, 320]), outputs[:1],
                       [(0, 0)], 1.0)
    with pytest.raises(ValueError, match='cannot recognise'):
        PersonDetector(path)
    with pytest.raises(ValueError, match='unknown detector format'):
        PersonDetector(path, format='yolov9000')


def test_pose_model_and_bad_person_class_rejected(tmp_path):
    path = native_model(tmp_path, (64, 48), {'metrabs_ros.contract': 'pose/1'})
    with pytest.raises(ValueError, match='not a person detector'):
        PersonDetector(path)
    path = yolo_model(tmp_path, 'yolov5', (640, 480))
    with pytest.raises(ValueError, match='person_class 7 is out of range'):
        PersonDetector(path, person_class=7)
    with pytest.raises(ValueError, match='uint8'):
        PersonDetector(path).detect(np.zeros([48, 64, 3], np.float32))


def test_raw_yolox_with_wrong_anchor_count_is_explained(tmp_path):
    path = yolo_model(tmp_path, 'yolov5', (640, 480))  # 3 x grid rows: not a YOLOX grid
    detector = PersonDetector(path, format='yolox', yolox_decoded=False)
    with pytest.raises(ValueError, match='yolox_decoded=True'):
        detector.detect(solid_image((640, 480)))


F32 = 'tensor(float)'


def _image_input(size=640):
    return [TensorInfo('images', (1, 3, size, size), F32)]


# output layouts of well-known exports (shapes from their export code / documentation)
KNOWN_EXPORTS = {
    'yolov8n 640': (640, [('output0', (1, 84, 8400))], 'yolov8', None),
    'yolo11 single-class 640': (640, [('output0', (1, 5, 8400))], 'yolov8', None),
    'yolov8 p6 1280': (1280, [('output0', (1, 84, 34000))], 'yolov8', None),
    'yolov5s 640': (640, [('output0', (1, 25200, 85))], 'yolov5', None),
    'yolov5 single-class 640': (640, [('output0', (1, 25200, 6))], 'yolov5', None),
    'yolov5s6 1280': (1280, [('output0', (1, 102000, 85))], 'yolov5', None),
    'yolov5 v5 with per-level outputs': (640, [('output', (1, 25200, 85)), ('345', (1, 3, 80, 80, 85)),
                                              ('403', (1, 3, 40, 40, 85)), ('461', (1, 3, 20, 20, 85))],
                                         'yolov5', None),
    'yolox_s 640': (640, [('output', (1, 8400, 85))], 'yolox', None),
    'yolox_tiny 416': (416, [('output', (1, 3549, 85))], 'yolox', None),
    'yolox single-class': (640, [('output', (1, 8400, 6))], 'yolox', None),
    'ultralytics nms=True / yolov10': (640, [('output0', (1, 300, 6))], 'end2end', 'single'),
    'EfficientNMS (yolo exports)': (640, [('num_dets', (1, 1)), ('det_boxes', (1, 100, 4)),
                                          ('det_scores', (1, 100)), ('det_classes', (1, 100))], 'end2end',
                                    'efficient_nms'),
    'EfficientNMS_TRT default names': (640, [('num_detections', (1, 1)), ('detection_boxes', (1, 100, 4)),
                                             ('detection_scores', (1, 100)), ('detection_classes', (1, 100))],
                                       'end2end', 'efficient_nms'),
    'mmdeploy': (640, [('dets', (1, 100, 5)), ('labels', (1, 100))], 'end2end', 'dets_labels'),
    'boxes/scores/labels': (640, [('boxes', (1, 100, 4)), ('scores', (1, 100)), ('labels', (1, 100))], 'end2end',
                            'named'),
}


@pytest.mark.parametrize('name', list(KNOWN_EXPORTS))
def test_auto_detection_of_known_export_layouts(name):
    size, outputs, expected_format, expected_style = KNOWN_EXPORTS[name]
    layout = resolve_layout(_image_input(size), [TensorInfo(n, shape, F32) for n, shape in outputs], {})
    assert (layout.format, layout.end2end_style, layout.input_hw) == (expected_format, expected_style, (size, size))


def test_format_names():
    assert set(FORMAT_NAMES) == {'native', 'yolov5', 'yolov8', 'yolox', 'end2end'}


# ---------------------------------------------------------------------------------------------- letterbox, NMS
@pytest.mark.parametrize('image_wh,target_hw,yolox', [((500, 333), (640, 640), False), ((333, 500), (640, 640), False),
                                                      ((500, 333), (640, 640), True), ((641, 479), (320, 320), False),
                                                      ((100, 300), (256, 320), False)])
def test_letterbox_geometry_by_hand(image_wh, target_hw, yolox):
    w, h = image_wh
    r, left, top, new_w, new_h = hand_letterbox(image_wh, target_hw, yolox)
    image = solid_image(image_wh)
    padded, geometry = letterbox(image, target_hw, placement='topleft' if yolox else 'center',
                                 rounding='floor' if yolox else 'round')
    assert padded.shape == (*target_hw, 3) and padded.dtype == np.uint8
    content = np.zeros(target_hw, bool)
    content[top:top + new_h, left:left + new_w] = True
    assert (padded[content] == COLOR_RGB).all() and (padded[~content] == PAD).all()
    assert (geometry.offset_x_px, geometry.offset_y_px) == (left, top)
    np.testing.assert_allclose([geometry.scale_x, geometry.scale_y], [new_w / w, new_h / h])


def brute_force_nms(boxes, scores, iou_threshold, score_threshold, max_detections):
    def iou(p, q):
        iw = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
        ih = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
        union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - iw * ih
        return iw * ih / union if union > 0 else 0.0

    kept = []
    for i in sorted(range(len(scores)), key=lambda i: -scores[i]):
        if scores[i] < score_threshold or (max_detections >= 0 and len(kept) >= max_detections):
            continue
        if all(iou(boxes[i], boxes[k]) <= iou_threshold for k in kept):
            kept.append(i)
    return kept


@pytest.mark.parametrize('seed', range(6))
def test_nms_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 300
    centers = rng.uniform(0, 200, [8, 2])[rng.integers(0, 8, n)] + rng.normal(0, 6, [n, 2])  # clustered
    sizes = rng.uniform(10, 60, [n, 2])
    boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1)
    scores = rng.uniform(0, 1, n)
    for iou_threshold in (0.3, 0.5, 0.7):
        for max_detections in (-1, 5):
            expected = brute_force_nms(boxes.tolist(), scores.tolist(), iou_threshold, 0.2, max_detections)
            got = nms(boxes, scores, iou_threshold=iou_threshold, score_threshold=0.2,
                      max_detections=max_detections)
            assert got.tolist() == expected
    assert nms(np.zeros([0, 4]), np.zeros([0])).shape == (0,)


def test_nms_ties_identical_and_empty_boxes():
    rng = np.random.default_rng(7)
    base = rng.uniform(0, 100, [40, 2])
    boxes = np.concatenate([base, base + rng.uniform(0, 30, [40, 2])], axis=1)
    boxes = np.concatenate([boxes, boxes[:10], boxes[:5]])  # exact duplicates
    boxes[::7, 2] = boxes[::7, 0]  # zero-width boxes overlap nothing
    scores = np.round(rng.uniform(0, 1, len(boxes)), 1)  # many ties: lower index wins
    for iou_threshold in (0.0, 0.4, 0.9, 1.0):
        expected = brute_force_nms(boxes.tolist(), scores.tolist(), iou_threshold, 0.0, -1)
        assert nms(boxes, scores, iou_threshold=iou_threshold).tolist() == expected
