"""The INT8 OpenVINO IR of Ultralytics' COCO YOLO11n in ``../shared/pretrained``: where it is, how to read it.

:mod:`training.pretrained` rebuilds a fine-tunable checkpoint from its convolutions;
:mod:`training.parity` compares that checkpoint with it. Its int8 weights are stored as constant
subgraphs (Constant -> Convert -> Subtract zero point -> Multiply by scale -> Reshape) that
:func:`evaluate_constant` folds back into float arrays with numpy.

openvino is imported by the callers, inside functions: importing this module is cheap.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from training.paths import SHARED_PRETRAINED

__all__ = ["DEFAULT_IR_DIR", "IR_METADATA_NAME", "IR_XML_NAME", "evaluate_constant"]

DEFAULT_IR_DIR = SHARED_PRETRAINED / "yolo11n-coco-int8-openvino"
IR_XML_NAME = "yolo11n.xml"
IR_METADATA_NAME = "metadata.yaml"


def evaluate_constant(node: Any) -> np.ndarray:
    """Evaluate a constant subgraph (Constant, Convert, Subtract, Multiply, Reshape) with numpy.

    Args:
        node: an ``openvino`` Node whose inputs are all constant.

    Returns:
        The subgraph's value as float32.

    Raises:
        ValueError: on an op this reader does not know.
    """
    kind = node.get_type_name()
    if kind == "Constant":
        return np.asarray(node.get_data()).astype(np.float32)
    inputs = [evaluate_constant(i.get_source_output().get_node()) for i in node.inputs()]
    if kind == "Convert":
        return inputs[0]
    if kind == "Subtract":
        return inputs[0] - inputs[1]
    if kind == "Multiply":
        return inputs[0] * inputs[1]
    if kind == "Reshape":
        return inputs[0].reshape(inputs[1].astype(np.int64))
    raise ValueError(f"unsupported op {kind} in constant subgraph of {node.get_friendly_name()}")
