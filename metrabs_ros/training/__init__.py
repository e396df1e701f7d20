"""PyTorch part of metrabs_ros: the pose-model graph, its export to the ONNX model contract and test fixtures.

Needs torch; the runtime (library, CLI inference, ROS node) never imports this package.
See docs/model_contract.md §1 for the graph's inputs and outputs.

Modules:
  warp           gamma linearisation, 3-level pyramid, one GridSample per level for all crops, distortion
  heads          MeTRAbs 1×1-conv head, 2D/3D soft-argmax, official pixel / metric mappings
  absolute_pose  reconstruct_absolute (closed-form 3×3 ridge least squares, no torch.linalg)
  matrix3        adjugate 3×3 inverse / determinant / cross product from elementwise ops
  backbones      Backbone(kind=...) factory; TinyBackbone for tests
  efficientnet   EfficientNetV2-S/M/L with the official MeTRAbs key layout
  mobilenet      MobileNetV3-Large/Small (torchvision layout)
  resnet         ResNet-18/34/50 (torchvision layout)
  fusion         fuse_batchnorm (Conv+BN folding before export)
  pose_graph     PoseGraph (contract-level module; optional latent decoder, FP16 compute), build_pose_graph
  losses         MeTRAbs training losses and their step schedule
  checkpoint     our checkpoint format: save_checkpoint, load_checkpoint, graph_from_config
  export         export_pose_model, export_for_deployment, contract_metadata, example_inputs, run_onnx, parity_check
  import_official  official MeTRAbs PyTorch folder → PoseGraph + metadata (restricted unpickler, strict keys)
  commands       `metrabs-ros export` / `import-official` subcommands (torch imported only when they run)
  fixtures       make_random_pose_model (deterministic test models), oracle crop models for geometry tests
"""
