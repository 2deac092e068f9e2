"""A tiny small_cnn export written with numpy alone (config.json, model.safetensors, model.onnx), for where torch is
not installed: the serving set (requirements.txt) runs the app's tests on it. Its model.safetensors holds the keys
and shapes `emotion.models.SmallCNN` loads, and its model.onnx computes what that module computes in eval mode
(tests/test_light_install.py holds the two to each other where torch is installed)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

WIDTHS = (8, 16, 16, 32)
BN_EPS = 1e-5  # torch's BatchNorm2d default


def small_cnn_state(in_chans: int, num_classes: int, seed: int, widths=WIDTHS) -> dict[str, np.ndarray]:
    """SmallCNN's state dict, initialised as torch does (Kaiming fan-out convolutions, uniform linear layer) but
    from numpy's generator; batch-norm statistics drawn near (0, 1) so every layer does some work."""
    rng, state, c, index = np.random.default_rng(seed), {}, in_chans, 0
    for stage, w in enumerate(widths):
        for _ in range(2):
            state[f"features.{index}.weight"] = rng.normal(0, np.sqrt(2 / (w * 9)), (w, c, 3, 3)).astype(np.float32)
            bn = f"features.{index + 1}"
            state[f"{bn}.weight"] = rng.uniform(0.8, 1.2, w).astype(np.float32)
            state[f"{bn}.bias"] = rng.normal(0, 0.1, w).astype(np.float32)
            state[f"{bn}.running_mean"] = rng.normal(0, 0.1, w).astype(np.float32)
            state[f"{bn}.running_var"] = rng.uniform(0.8, 1.2, w).astype(np.float32)
            state[f"{bn}.num_batches_tracked"] = np.array(0, np.int64)
            index, c = index + 3, w  # conv, batch norm, ReLU
        index += stage < len(widths) - 1  # the max-pooling between stages
    bound = 1 / np.sqrt(c)
    state["fc.weight"] = rng.uniform(-bound, bound, (num_classes, c)).astype(np.float32)
    state["fc.bias"] = rng.uniform(-bound, bound, num_classes).astype(np.float32)
    return state


def small_cnn_graph(state: dict[str, np.ndarray], input_size, num_classes: int):
    """The ONNX graph of SmallCNN in eval mode on `state`: input 'pixels' (batch, C, H, W), output 'logits'."""
    from onnx import TensorProto, helper, numpy_helper

    from emotion.onnx_export import INPUT_NAME, OPSET, OUTPUT_NAME

    nodes, x = [], INPUT_NAME
    convs = sorted({int(k.split(".")[1]) for k in state if k.startswith("features.") and state[k].ndim == 4})
    for i, k in enumerate(convs):
        bn = f"features.{k + 1}"
        nodes += [helper.make_node("Conv", [x, f"features.{k}.weight"], [f"c{k}"], pads=[1, 1, 1, 1]),
                  helper.make_node("BatchNormalization", [f"c{k}", *(f"{bn}.{p}" for p in
                                   ("weight", "bias", "running_mean", "running_var"))], [f"b{k}"], epsilon=BN_EPS),
                  helper.make_node("Relu", [f"b{k}"], [f"r{k}"])]
        x = f"r{k}"
        if i % 2 and i < len(convs) - 1:
            nodes.append(helper.make_node("MaxPool", [x], [f"p{k}"], kernel_shape=[2, 2], strides=[2, 2]))
            x = f"p{k}"
    nodes += [helper.make_node("GlobalAveragePool", [x], ["pooled"]),
              helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
              helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], [OUTPUT_NAME], transB=1)]
    weights = [numpy_helper.from_array(v, k) for k, v in state.items() if v.dtype == np.float32]
    graph = helper.make_graph(
        nodes, "small_cnn", [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", *input_size])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", num_classes])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def write_numpy_export(folder: Path, info, seed: int = 0) -> Path:
    """`info`'s small_cnn (WIDTHS) exported as the trainer would, with its model.onnx; no torch anywhere."""
    import onnx
    from safetensors.numpy import save_file

    from emotion.onnx_export import describe, weights_digest

    state = small_cnn_state(info.channels, info.num_classes, seed)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "model.safetensors"))
    cfg = {"num_classes": info.num_classes, "input_size": list(info.input_size), "mean": list(info.mean),
           "std": list(info.std), "first_conv": "features.0", "classifier": "fc"}
    config = info.to_config(pretrained_cfg=cfg, num_features=WIDTHS[-1])
    config["model_args"] = {"widths": list(WIDTHS)}
    (folder / "config.json").write_text(json.dumps(config))
    proto = small_cnn_graph(state, info.input_size, info.num_classes)
    describe(proto, info, weights_digest(folder))
    onnx.checker.check_model(proto)
    (folder / "model.onnx").write_bytes(proto.SerializeToString())
    return folder
