"""Dataset import, fine-tuning, parity checks and ONNX export.

The only package that imports torch/ultralytics/openvino, always inside functions, so that importing
``training`` costs nothing and ``vipare`` never pulls them in.
"""
