"""PyTorch part of metrabs_ros: the pose-model graph, its export to the ONNX model contract and test fixtures.

Needs torch; the runtime (library, CLI inference, ROS node) never imports this package.
See docs/model_contract.md §1 for the graph's inputs and outputs.

Modules:
  warp           gamma linearisation, 3-level pyramid, one GridSample per level for all crops, distortion
  heads          MeTRAbs 1×1-conv head, 2D/3D soft-argmax, official pixel / metric mappings
  absolute_pose  reconstruct_absolute (closed-form 3×3 ridge least squares, no torch.linalg)
  matrix3        adjugate 3×3 inverse / determinant / cross product from elementwise ops
  backbones      Backbone(out_channels, stride=32) factory; TinyBackbone for tests
  pose_graph     PoseGraph (contract-level module), build_pose_graph
  export         export_pose_model, contract_metadata, example_inputs, run_onnx, parity_check
  fixtures       make_random_pose_model (deterministic test models), oracle crop models for geometry tests
"""
