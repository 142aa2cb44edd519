import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sgsc_export.method import core


def reference_q(w: np.ndarray, b: float, e: float) -> np.ndarray:
    """The formula, written independently in numpy float32 (np.round is round-half-to-even)."""
    f = np.float32
    b = f(max(b, 0.0))
    lo, hi = -np.exp2(b - f(1)), np.exp2(b - f(1)) - f(1)
    x = np.minimum(np.maximum(np.exp2(f(-e)) * w, lo), hi)
    return np.exp2(f(e)) * np.round(x)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-4, 4, allow_nan=False, width=32), min_size=1, max_size=32),
       st.floats(-1, 8), st.integers(-6, 2))
def test_quantize_matches_formula(ws, b, e):
    w = np.asarray(ws, dtype=np.float32)
    got = core.quantize(torch.tensor(w), torch.tensor(b, dtype=torch.float32), torch.tensor(float(e))).numpy()
    want = reference_q(w, float(np.float32(b)), e)
    np.testing.assert_array_equal(got, want)


def test_round_half_to_even():
    w = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5])
    q = core.quantize(w, torch.tensor(8.0), torch.tensor(0.0))
    assert q.tolist() == [0.0, 2.0, 2.0, -0.0, -2.0, -2.0]


def test_zero_bits_give_exact_zero():
    w = torch.randn(100)
    for b in (0.0, -0.3, -1.0):
        assert torch.count_nonzero(core.quantize(w, torch.tensor(b), torch.tensor(-3.0))) == 0


@pytest.mark.parametrize("b", [0.2, 0.5, 0.99, 1.0])
def test_fractional_bits_below_one_fit_one_bit(b):
    w = torch.linspace(-3, 3, 101)
    ints = core.quantize_int(w, torch.tensor(b), torch.tensor(-1.0))
    assert set(ints.unique().tolist()) <= {-1.0, 0.0}
    assert core.stored_bits(torch.tensor(b)).item() == 1


@pytest.mark.parametrize("b", [1.3, 2.0, 2.7, 4.0, 7.5, 8.0])
def test_integers_fit_ceil_b_bits(b):
    w = torch.linspace(-1000, 1000, 4001)
    ints = core.quantize_int(w, torch.tensor(b), torch.tensor(0.0))
    n = core.stored_bits(torch.tensor(b)).item()
    assert n == int(np.ceil(b))
    assert ints.min() >= -(2 ** (n - 1)) and ints.max() <= 2 ** (n - 1) - 1


def test_straight_through_gradients():
    w = torch.tensor([0.3, 1.2, 100.0, -100.0], requires_grad=True)
    b = torch.tensor(3.0, requires_grad=True)
    e = torch.tensor(0.0, requires_grad=True)
    core.quantize(w, b, e).sum().backward()
    # inside the clamp range the rounding passes the gradient through unchanged; outside it is cut
    assert w.grad.tolist() == [1.0, 1.0, 0.0, 0.0]
    # the bounds carry the gradient to b: d/db (2^(b-1) - 1 - 2^(b-1)) = 0 for the two clamped weights here
    assert b.grad is not None and e.grad is not None
    b2 = torch.tensor(3.0, requires_grad=True)
    core.quantize(torch.tensor([100.0]), b2, torch.tensor(0.0)).sum().backward()
    assert b2.grad.item() == pytest.approx(np.log(2) * 2.0 ** 2)


def test_size_bits_eq4():
    b = torch.tensor([[2.0], [0.0], [3.5]])
    n = torch.tensor([9.0, 9.0, 4.0])
    assert core.size_bits(b, n).item() == pytest.approx(2 * 9 + 0 + 3.5 * 4)


def test_the_clamp_has_the_gradients_of_max_then_min():
    """quantize_int clamps with torch.clamp(x, lo, hi) (one autograd node); values and gradients are those of
    min(max(x, lo), hi), the formulation of eq. 2, wherever no value sits exactly on a bound."""
    from sgsc_export.method import core

    torch.manual_seed(0)
    w = torch.randn(16, 8, 3, 3, requires_grad=True)
    b = (torch.rand(16, 1, 1, 1) * 6).requires_grad_()
    e = (torch.randn(16, 1, 1, 1) - 3).requires_grad_()
    g = torch.randn(16, 8, 3, 3)

    def reference(w, b, e):
        lo, hi = core._bounds(b)
        return torch.exp2(e) * core.round_ste(torch.minimum(torch.maximum(torch.exp2(-e) * w, lo), hi))

    ours, ref = core.quantize(w, b, e), reference(w, b, e)
    assert torch.equal(ours, ref)
    grads = torch.autograd.grad((ours * g).sum(), (w, b, e))
    for a, r in zip(grads, torch.autograd.grad((ref * g).sum(), (w, b, e))):
        assert torch.allclose(a, r, rtol=1e-6, atol=1e-7)
