"""Person detection: ONNX detector adapters (native contract, YOLOv5, YOLOv8/11, YOLOX, end-to-end exports),
letterboxing and NMS. Runtime dependencies: numpy, OpenCV (resize) and ONNX Runtime."""

from metrabs_ros.detection.autodetect import DetectorLayout, resolve_layout
from metrabs_ros.detection.detector import PersonDetector, boxes_xyxy_to_result
from metrabs_ros.detection.formats import END2END_STYLES, FORMAT_NAMES, PREPROCESSING, InputSpec
from metrabs_ros.detection.letterbox import LetterboxGeometry, boxes_to_original, letterbox, letterbox_geometry
from metrabs_ros.detection.nms import box_iou_one_to_many, nms

__all__ = [
    'PersonDetector', 'boxes_xyxy_to_result', 'nms', 'box_iou_one_to_many', 'letterbox', 'letterbox_geometry',
    'LetterboxGeometry', 'boxes_to_original', 'FORMAT_NAMES', 'END2END_STYLES', 'PREPROCESSING', 'InputSpec',
    'DetectorLayout', 'resolve_layout',
]
