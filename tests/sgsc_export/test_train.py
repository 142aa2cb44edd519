"""The training loop's precomputed distillation targets (``train.teacher_table``)."""

from __future__ import annotations

import torch

from sgsc_export.config import CompressConfig
from sgsc_export.models import mnist_cnn
from sgsc_export.tasks import CLASSIFICATION, LANGUAGE_MODEL
from sgsc_export.train import loop as train


def _teacher() -> torch.nn.Module:
    torch.manual_seed(0)
    m = mnist_cnn().eval()
    for mod in m.modules():  # batch norm statistics that matter, as a trained float model has
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-1, 1)
            mod.running_var.uniform_(0.5, 2.0)
    return m


def test_table_rows_are_the_teachers_logits_for_any_batch():
    teacher, x = _teacher(), torch.rand(300, 1, 28, 28)
    table = train.teacher_table(teacher, x, CompressConfig(batch_size=64), CLASSIFICATION, steps=100)
    assert table is not None and table.shape == (300, 10) and not table.requires_grad
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(5):  # random training batches, as the loop draws them
            idx = torch.randint(len(x), (64,), generator=g)
            torch.testing.assert_close(table[idx], teacher(x[idx]), rtol=1e-5, atol=1e-6)


def test_no_table_where_it_would_not_pay_fit_or_hold(monkeypatch):
    teacher, x = _teacher(), torch.rand(130, 1, 28, 28)
    cfg = CompressConfig(batch_size=64)
    assert train.teacher_table(teacher, x, cfg, CLASSIFICATION, steps=2) is None  # 130 samples ≥ 2 × 64 seen
    assert train.teacher_table(teacher, x[:0], cfg, CLASSIFICATION, steps=10) is None
    assert train.teacher_table(teacher, x, cfg, LANGUAGE_MODEL, steps=10) is None  # batches are trimmed
    monkeypatch.setattr(train, "TEACHER_TABLE_BYTES", 130 * 10 * 4 - 1)  # one byte short of 130 × 10 float32
    assert train.teacher_table(teacher, x, cfg, CLASSIFICATION, steps=10) is None
    monkeypatch.setattr(train, "TEACHER_TABLE_BYTES", 130 * 10 * 4)
    assert train.teacher_table(teacher, x, cfg, CLASSIFICATION, steps=10).shape == (130, 10)


def test_batchnorm_statistics_are_re_estimated_before_a_check():
    """A BatchNorm no convolution folds (before its convolution here, as in a pre-activation block) keeps
    stale running statistics while the weights move; before a check they are recomputed as the plain average
    of the calibration batches' statistics, and mode and momentum are restored."""
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 3))
    x = torch.randn(256, 4) * 3.0 + 5.0
    y = torch.zeros(256, dtype=torch.long)
    model.eval()
    assert train.recalibrate_norms_(model, x, y, 64, CLASSIFICATION)
    bn = model[0]
    batches = [x[s : s + 64] for s in range(0, 256, 64)]
    assert torch.allclose(bn.running_mean, torch.stack([b.mean(0) for b in batches]).mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, torch.stack([b.var(0) for b in batches]).mean(0), atol=1e-4)
    assert not model.training and bn.momentum == 0.1
    assert not train.recalibrate_norms_(nn.Linear(4, 3), x, y, 64, CLASSIFICATION)  # nothing to do


def test_the_calibration_samples_span_a_sorted_split():
    idx = train.norm_calibration_indices(10_000)
    assert len(idx) == train.NORM_SAMPLES and idx[0] == 0 and idx[-1] > 9_000
    assert list(train.norm_calibration_indices(5)) == [0, 1, 2, 3, 4]
