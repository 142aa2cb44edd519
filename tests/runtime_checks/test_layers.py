"""Per-layer parity: local twins, activation references, steps, and weight matching by name."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from runtime_checks.graph import load_model
from runtime_checks.layers import _channel_steps, expose_outputs, layer_parity, match_weights
from runtime_checks.sessions import plan_session
from tests.runtime_checks.conftest import make_data, make_model, run_onnx


def _info(tmp_path, model):
    onnx.save(model, tmp_path / "m.onnx")
    return load_model(tmp_path / "m.onnx")


def test_own_dequantized_reference_is_exact_at_every_level(tmp_path):
    info = _info(tmp_path, make_model())
    x = make_data(32, 0)["x_test"]
    result = layer_parity(info, x, ["disabled", "all"], plan_session(info), 1)
    assert result.mode == "local" and result.reference == "dequantized"
    assert len(result.layers) == 4 and max(e.max_error_steps for e in result.layers) < 1e-3


def test_twins_work_when_nodes_have_no_names(tmp_path):
    """Exporters may leave node names empty (the converters' compact profile does): twins need unique
    names."""
    model = make_model()
    for node in model.graph.node:
        node.name = ""
    info = _info(tmp_path, model)
    result = layer_parity(info, make_data(8, 0)["x_test"], ["disabled"], plan_session(info), 1)
    assert len(result.layers) == 2 and max(e.max_error_steps for e in result.layers) < 1e-3


def test_unsafe_options_show_the_matmulnbits_error_in_steps(tmp_path):
    info = _info(tmp_path, make_model())
    x = make_data(32, 0)["x_test"]
    result = layer_parity(info, x, ["all"], plan_session(info, safe=False), 1)
    assert result.worst.layer == "fc" and result.worst.max_error_steps > 1


def test_activation_reference_names_the_layer(tmp_path):
    good = make_model()
    info = _info(tmp_path, good)
    x = make_data(16, 0)["x_test"]
    exposed = expose_outputs(good, ["conv.out", "fc.mm"])
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # exact reference
    conv, fc = ort.InferenceSession(exposed.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(
        ["conv.out", "fc.mm"], {"x": x})
    fc = fc.copy()
    fc[:, 3] += 1.0
    result = layer_parity(info, x, ["disabled"], plan_session(info), 1, activations={"conv": conv, "fc": fc})
    assert result.mode == "end_to_end" and result.worst.layer == "fc" and result.worst.worst_channel == 3
    assert run_onnx(good, x).shape == (16, 10)


def test_steps_per_channel_scalar_and_blocked():
    np.testing.assert_array_equal(_channel_steps(np.array(0.5), 3), [0.5, 0.5, 0.5])
    np.testing.assert_array_equal(_channel_steps(np.array([1.0, 2.0]), 2), [1.0, 2.0])
    np.testing.assert_array_equal(_channel_steps(np.array([[1.0, 4.0], [2.0, 0.5]]), 2), [1.0, 0.5])


def test_match_weights_by_bounded_name_and_transpose(tmp_path):
    info = _info(tmp_path, make_model())
    state = {"conv.weight": np.zeros((4, 1, 3, 3)), "fc.weight": np.zeros((10, 144)), "fc.weight_extra": 0,
             "features.1.weight": np.zeros(1)}
    shapes = {"conv": (4, 1, 3, 3), "fc": (144, 10)}
    weights, notes = match_weights(info, state, ["conv", "fc", "features.1"], shapes)
    assert weights["fc"].shape == (144, 10) and set(weights) == {"conv", "fc"} and not notes
    weights, notes = match_weights(info, state, ["features.1"], shapes)
    assert not weights and len(notes) == 2


def test_match_weights_prefers_the_converters_names_over_node_names():
    """Numeric layer names ("2") must not match a node named node_conv2d_2 (a real dynamo-export name)."""
    from types import SimpleNamespace

    from runtime_checks.graph import QuantLayer
    layers = [QuantLayer("node_conv2d_2", "Conv", "y6", "6.weight_int", "6.scale", "w6", 0, 8),
              QuantLayer("node_conv2d", "Conv", "y0", "u0.20", "0.scale", "w0", 0, 8)]
    state = {"2.weight": np.zeros((3, 1)), "6.weight": np.ones((4, 1)), "0.weight": np.full((5, 1), 2.0)}
    weights, notes = match_weights(SimpleNamespace(layers=layers), state, ["0", "2", "6"],
                                   {"node_conv2d_2": (4, 1), "node_conv2d": (5, 1)})
    assert weights["node_conv2d_2"][0, 0] == 1.0 and weights["node_conv2d"][0, 0] == 2.0 and not notes


def test_match_weights_finds_a_modules_tensor_under_its_own_name():
    """An attention block's in_proj_weight is a layer of its own, stored as ``attn.in_proj_weight`` (not
    ``attn.in_proj_weight.weight``), here read by a MatMul as ``[in, out]``."""
    from types import SimpleNamespace

    from runtime_checks.graph import QuantLayer
    layers = [QuantLayer("node_MatMul_8", "MatMul", "y", "attn.in_proj_weight.weight_int",
                         "attn.in_proj_weight.scale", "w", 1, 8)]
    state = {"attn.in_proj_weight": np.arange(24.0).reshape(6, 4), "attn.in_proj_bias": np.zeros(6)}
    weights, notes = match_weights(SimpleNamespace(layers=layers), state, ["attn.in_proj_weight"],
                                   {"node_MatMul_8": (4, 6)})
    assert np.array_equal(weights["node_MatMul_8"], state["attn.in_proj_weight"].T) and not notes
