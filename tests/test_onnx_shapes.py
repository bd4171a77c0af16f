"""vipare.onnx_shapes: a model declared at one image size runs at any, and keeps everything else."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.onnxgen import IR_VERSION, OPSET
from vipare.onnx_shapes import free_image_size


def _doubler(shape: list[int | str]) -> bytes:
    """``output = 2 * input`` through an intermediate value, every shape declared as ``shape``."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["input", "two"], ["twice"]), helper.make_node("Identity", ["twice"], ["output"])],
        "doubler",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)],
        initializer=[numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")],
        value_info=[helper.make_tensor_value_info("twice", TensorProto.FLOAT, shape)],
        doc_string="a doubler",
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    helper.set_model_props(model, {"author": "vipare tests"})
    return model.SerializeToString()


def test_a_fixed_size_model_runs_at_another_size_once_freed() -> None:
    fixed = _doubler([1, 3, 8, 8])
    x = np.arange(3 * 16 * 24, dtype=np.float32).reshape(1, 3, 16, 24)
    with pytest.raises(Exception, match="dimensions"):
        ort.InferenceSession(fixed, providers=["CPUExecutionProvider"]).run(None, {"input": x})
    session = ort.InferenceSession(free_image_size(fixed), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, "height", "width"]
    (out,) = session.run(None, {"input": x})
    assert np.array_equal(out, 2 * x)


def test_only_the_declared_shapes_change() -> None:
    before = onnx.load_from_string(_doubler([1, 3, 8, 8]))
    after = onnx.load_from_string(free_image_size(before.SerializeToString()))
    onnx.checker.check_model(after, full_check=True)
    dims = after.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value or d.dim_param for d in dims] == [1, 3, "height", "width"]
    out = after.graph.output[0].type.tensor_type.shape.dim
    assert len(out) == 4 and not any(d.HasField("dim_value") or d.HasField("dim_param") for d in out)
    assert not after.graph.value_info
    # fields this module does not know are kept as they were
    assert after.graph.node == before.graph.node and after.graph.initializer == before.graph.initializer
    assert after.metadata_props == before.metadata_props and after.graph.doc_string == "a doubler"
    assert after.opset_import == before.opset_import and after.ir_version == before.ir_version


def test_a_model_already_free_is_returned_as_it_is() -> None:
    model = _doubler([1, 3, "h", "w"])
    assert free_image_size(model) is model


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (b"\xff\xff\xff not a model", "not a serialized ONNX model"),
        (_doubler([3, 8, 8]), "3 dimensions"),
    ],
)
def test_what_is_not_an_image_model_is_refused(model: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        free_image_size(model)
