"""qdq_select: the activations of an ort-int8 file are quantised only where the gate's bounds hold."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from converters.passes.qdq_select import QDQTargets, SelectionData, choose, flip_bound
from runtime_checks.gate import DEFAULT_PERPLEXITY_RATIO, Thresholds


def test_targets_default_to_the_gate():
    gate = Thresholds()
    t = QDQTargets()
    assert (t.min_agreement, t.max_accuracy_drop) == (gate.min_agreement, gate.max_accuracy_drop)
    assert t.max_perplexity_ratio == DEFAULT_PERPLEXITY_RATIO


@pytest.mark.parametrize("flips,n,lo,hi", [(0, 143, 0.0069, 0.0070), (1, 143, 0.018, 0.019),
                                           (0, 0, 1.0, 1.0), (5, 1000, 0.0069, 0.0085)])
def test_flip_bound_is_the_wilson_upper_end(flips, n, lo, hi):
    assert lo <= flip_bound(flips, n) <= hi
    if n:
        assert flip_bound(flips, n) > flips / n


def _noisy_model(noise: dict[str, float]) -> onnx.ModelProto:
    """y = x + Σ noise_t · sin(37·x) over the candidates t named in ``noise`` (each a 'quantisation' that
    perturbs the logits by its amount)."""
    nodes, prev = [], "x"
    for i in range(len(noise)):
        nodes += [helper.make_node("Mul", ["x", "k37"], [f"m{i}"]),
                  helper.make_node("Sin", [f"m{i}"], [f"s{i}"]),
                  helper.make_node("Mul", [f"s{i}", f"a{i}"], [f"n{i}"]),
                  helper.make_node("Add", [prev, f"n{i}"], [f"y{i}"])]
        prev = f"y{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    inits = [helper.make_tensor("k37", TensorProto.FLOAT, [], [37.0])]
    inits += [helper.make_tensor(f"a{i}", TensorProto.FLOAT, [], [amount])
              for i, (_, amount) in enumerate(sorted(noise.items()))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _data(n: int = 2000) -> SelectionData:
    x = np.random.default_rng(0).normal(size=(n, 10)).astype(np.float32)
    return SelectionData(x=x, split="preservation", y=x.argmax(-1), float_logits=x)


DAMAGE = {"a": 0.0, "b": 0.5, "c": 0.0, "d": 0.002, "e": 0.8}


def _build(enabled):
    return _noisy_model({t: DAMAGE[t] for t in enabled})


def test_all_quantised_when_harmless():
    choice = choose(["a", "c", "d"], _build, _data(), QDQTargets())
    assert choice.enabled == {"a", "c", "d"} and choice.kept_float == ()
    assert choice.record()["reason"].startswith("every candidate")


def test_the_damaging_ones_stay_float_and_the_result_meets_the_bounds():
    choice = choose(list(DAMAGE), _build, _data(), QDQTargets())
    assert set(choice.kept_float) == {"b", "e"} and choice.kept_float[0] == "e"  # the worst first
    assert choice.enabled == {"a", "c", "d"}
    for level in ("disabled", "all"):
        assert choice.measured["preservation"][level]["flip_bound"] <= 1 - 0.99
    rec = choice.record()
    assert rec["candidates"] == 5 and rec["quantised"] == 3 and rec["split"] == "preservation"


def test_every_held_split_must_meet_the_bounds():
    """A choice measured on two splits meets the bounds on each: a candidate harmless on the first but
    damaging on the second (the noise is absolute: harmless beside the first split's large logits) stays
    float."""
    rng = np.random.default_rng(1)
    first = SelectionData(x=rng.normal(size=(2000, 10)).astype(np.float32) * 1e3, split="validation")
    second = _data()
    alone = choose(["a", "b"], _build, first, QDQTargets())
    both = choose(["a", "b"], _build, [first, second], QDQTargets())
    assert alone.enabled == {"a", "b"}
    assert "b" not in both.enabled and set(both.measured) == {"validation", "preservation"}
    assert both.record()["split"] == "validation+preservation"
    assert both.record()["n"] == {"validation": 2000, "preservation": 2000}


def test_the_accuracy_bound_keeps_half_the_twins_slack():
    """On a held split, the quantised file may spend half of what the weight-only file has to spare
    against the gate's accuracy bound, no more (the other half is the unseen test split's margin)."""
    from converters.passes.qdq_select import _bounds

    t = QDQTargets(max_accuracy_drop=1.0)
    assert _bounds({"accuracy": 0.98}, {"accuracy": 0.985}, t)["min_accuracy"] == pytest.approx(0.9775)
    assert _bounds({"accuracy": 0.97}, {"accuracy": 0.985}, t)["min_accuracy"] == pytest.approx(0.97)
    assert _bounds({"perplexity": 2.0}, {"perplexity": 2.0}, QDQTargets())["max_perplexity"] == \
        pytest.approx(2.05)


def test_looser_targets_keep_more_quantised():
    strict = choose(list(DAMAGE), _build, _data(), QDQTargets())
    loose = choose(list(DAMAGE), _build, _data(), QDQTargets(min_agreement=0.0, max_accuracy_drop=100.0))
    assert loose.enabled > strict.enabled
    assert loose.enabled == set(DAMAGE) - {"e"}  # with e too, accuracy falls below half the slack (0.5)


def test_a_small_split_needs_a_clean_record():
    """On 50 samples not even a clean record is enough (0 of 50: Wilson bound 2 % > 1 %): weight-only."""
    data = _data(50)
    choice = choose(["b"], _build, data, QDQTargets())
    assert choice.enabled == frozenset() and "weight-only" in choice.reason
