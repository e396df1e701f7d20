"""PyTorch part of metrabs_ros: the pose-model graph, its export to the ONNX model contract and test fixtures.

Needs torch; the runtime (library, CLI inference, ROS node) never imports this package.
See docs/model_contract.md §1 for the graph's inputs and outputs.
"""
