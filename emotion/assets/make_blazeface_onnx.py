"""face_detection_short_range.tflite (BlazeFace short range, unchanged weights) -> face_detection_short_range.onnx.

Why: emotion/faces.py looks at every face YuNet finds once more through BlazeFace (emotion/blazeface.py), all the
faces of a photo in one batch. MediaPipe's Tasks API takes one image per call and hands each call to a thread of
its own; in ONNX Runtime the views of a whole group photo are one call, and the decoding around the model (anchors,
sigmoid scores, weighted NMS: MediaPipe's face_detection_short_range graph) is written once in blazeface.py and
tested against MediaPipe's own output (tests/test_blazeface.py).

What changes besides the format: the batch dimension is made free, and the four Reshapes that flatten each head's
output to (1, anchors, values) get (-1, anchors, values), so a batch of N views gives (N, 896, 16) and (N, 896, 1).
The weights, layers and outputs are tf2onnx's conversion as it is.

Needs a throwaway environment: pip install tf2onnx==1.17.0 onnx tensorflow-cpu==2.21.0; then
    python emotion/assets/make_blazeface_onnx.py emotion/assets/face_detection_short_range.tflite \\
        emotion/assets/face_detection_short_range.onnx
and record the printed sha256 in emotion/blazeface.py (SHA256) and emotion/assets/README.md.
"""
from __future__ import annotations

import hashlib
import sys

import numpy as np


def convert(tflite: str, out: str) -> str:
    import onnx
    import tf2onnx
    from onnx import numpy_helper, shape_inference

    model, _ = tf2onnx.convert.from_tflite(tflite, opset=13)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in shape_inference.infer_shapes(model).graph.value_info}
    graph = model.graph
    for value in list(graph.input) + list(graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    for node in graph.node:
        if node.op_type == "Reshape":  # (1, h, w, anchors * values) -> (-1, h * w * anchors, values)
            _, h, w, c = shapes[node.input[0]]
            values = 16 if c % 16 == 0 and "regressor" in node.input[0] else 1
            name = f"{node.output[0]}_shape"
            graph.initializer.append(numpy_helper.from_array(np.array([-1, h * w * c // values, values]), name))
            node.input[1] = name
    used = {name for node in graph.node for name in node.input}
    for tensor in [t for t in graph.initializer if t.name not in used]:  # the shared (1, -1, values) shapes
        graph.initializer.remove(tensor)
    _canonical_constants(graph)
    del graph.value_info[:]
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    with open(out, "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


def _canonical_constants(graph) -> None:
    """Constants named and stored in the order the nodes first use them: tf2onnx names and orders them
    differently from run to run, which would change the file's digest for the same model."""
    names = {t.name for t in graph.initializer}
    order: dict[str, str] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in names:
                node.input[i] = order.setdefault(name, f"const_{len(order)}")
    tensors = sorted(graph.initializer, key=lambda t: int(order[t.name].split("_")[1]))
    for tensor in tensors:
        tensor.name = order[tensor.name]
    copies = [type(t)() for t in tensors]
    for copy, tensor in zip(copies, tensors):
        copy.CopyFrom(tensor)
    del graph.initializer[:]
    graph.initializer.extend(copies)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(convert(sys.argv[1], sys.argv[2]))
