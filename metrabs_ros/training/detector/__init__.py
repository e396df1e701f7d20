"""Small single-class person detector: training and export to the native detector contract (docs/detector.md).

Needs torch (except ``commands``, which imports it only when a command runs). Modules:
  model     PersonCenterNet (Backbone(kind) taps at strides 8/16/32 + light FPN + heatmap/ltrb heads),
            decode_candidates (3x3 peak test + TopK, exportable)
  targets   assign_targets (TTFNet-style heatmap and ltrb targets), decode_numpy (exact inverse)
  losses    heatmap focal loss, weighted GIoU loss, detector_loss
  data      scene sources (scene folders, data-engine scene datasets, numpy renderer), augmentation, the Dataset
  metrics   recall@IoU 0.5 and AP50 for people taller than a minimum height
  train     train_detector (config, resumable checkpoints, EMA, validation, export), load_config, export_run
  export    build_detector_onnx / export_detector (in-graph letterbox), detect_torch, resize_matrix, parity_check
  commands  train-detector, export-detector, render-detector-scenes, benchmark-detector
"""
