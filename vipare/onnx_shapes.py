"""Freeing an ONNX model's declared image size, so that onnxruntime runs it at any height and width.

Some exports declare a fixed input (YuNet's ``1 x 3 x 640 x 640``) although every operator of the
graph works at any size (convolutions, Reshape to ``[1, -1, k]``, Resize by a scale). onnxruntime
refuses an input whose size differs from the declared one; :func:`free_image_size` rewrites the
declaration: the input's height and width become symbolic, and the dimensions declared for the
outputs and the intermediate values (computed for the fixed size) are dropped, for onnxruntime to infer.

The ``onnx`` package is not a dependency of the library (see docs/ARCHITECTURE.md), so the model is
read with protobuf (onnxruntime's own dependency) through the few fields of ``onnx.proto`` this
needs; every other field is kept as it was read, as protobuf keeps the fields it does not know.
"""

from __future__ import annotations

import functools
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory

__all__ = ["free_image_size"]

_PACKAGE = "vipare.onnx_shapes"
_Field = descriptor_pb2.FieldDescriptorProto

# The messages of onnx.proto on the way from a model to its inputs' dimensions, with only the fields
# read or written here, at their numbers in onnx.proto: message -> (field, number, type, message type).
# Dimension's two fields form a oneof, as in onnx.proto, so that setting dim_param clears dim_value.
_INT32, _INT64, _STRING, _MESSAGE = _Field.TYPE_INT32, _Field.TYPE_INT64, _Field.TYPE_STRING, _Field.TYPE_MESSAGE
_SCHEMA: dict[str, tuple[tuple[str, int, int, str | None], ...]] = {
    "Dimension": (("dim_value", 1, _INT64, None), ("dim_param", 2, _STRING, None)),
    "TensorShapeProto": (("dim", 1, _MESSAGE, "Dimension"),),
    "Tensor": (("elem_type", 1, _INT32, None), ("shape", 2, _MESSAGE, "TensorShapeProto")),
    "TypeProto": (("tensor_type", 1, _MESSAGE, "Tensor"),),
    "ValueInfoProto": (("name", 1, _STRING, None), ("type", 2, _MESSAGE, "TypeProto")),
    "GraphProto": (
        ("input", 11, _MESSAGE, "ValueInfoProto"),
        ("output", 12, _MESSAGE, "ValueInfoProto"),
        ("value_info", 13, _MESSAGE, "ValueInfoProto"),
    ),
    "ModelProto": (("graph", 7, _MESSAGE, "GraphProto"),),
}
_REPEATED = frozenset({"dim", "input", "output", "value_info"})


@functools.cache
def _model_class() -> type[message.Message]:
    proto = descriptor_pb2.FileDescriptorProto(name="vipare/onnx_shapes.proto", package=_PACKAGE, syntax="proto2")
    for name, fields in _SCHEMA.items():
        declared = proto.message_type.add(name=name)
        if name == "Dimension":
            declared.oneof_decl.add(name="value")
        for field, number, kind, type_name in fields:
            label = _Field.LABEL_REPEATED if field in _REPEATED else _Field.LABEL_OPTIONAL
            entry = declared.field.add(name=field, number=number, type=kind, label=label)  # type: ignore[arg-type]
            if type_name:
                entry.type_name = f".{_PACKAGE}.{type_name}"
            if name == "Dimension":
                entry.oneof_index = 0
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.ModelProto"))


def free_image_size(model: bytes, *, height: str = "height", width: str = "width") -> bytes:
    """``model`` with its first input's height and width symbolic, for onnxruntime to run at any size.

    Args:
        model: a serialized ONNX model whose first input is ``N x C x H x W``.
        height: the name given to the input's height (dimension 2).
        width: the name given to the input's width (dimension 3).

    Returns:
        The model with dimensions 2 and 3 of its first input named ``height`` and ``width``, the
        dimensions of its outputs unknown (their rank kept) and no shapes declared for intermediate
        values; ``model`` itself when the height and width are already symbolic.

    Raises:
        ValueError: ``model`` is not a serialized ONNX model, or its first input is not 4-dimensional.
    """
    try:
        parsed: Any = _model_class().FromString(model)
    except message.DecodeError as exc:
        raise ValueError(f"not a serialized ONNX model: {exc}") from exc
    graph = parsed.graph
    if not graph.input:
        raise ValueError("the model has no input")
    dims = graph.input[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ValueError(f"the model's input '{graph.input[0].name}' has {len(dims)} dimensions, not N x C x H x W")
    if not (dims[2].HasField("dim_value") or dims[3].HasField("dim_value")):
        return model
    dims[2].dim_param = height
    dims[3].dim_param = width
    for output in graph.output:
        for dim in output.type.tensor_type.shape.dim:
            dim.ClearField("value")  # unknown, as onnx.proto allows: onnxruntime infers it
    del graph.value_info[:]
    serialized: bytes = parsed.SerializeToString()
    return serialized
