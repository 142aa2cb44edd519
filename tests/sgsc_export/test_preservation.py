import numpy as np
import pytest
import torch
from torch import nn

from sgsc_export import ConfigError, DataError, PreservationSetSelector
from sgsc_export.models import digits_cnn
from sgsc_export.preservation.images import default_size


@pytest.fixture(scope="module")
def trained(digits_split):
    from sgsc_export import CompressConfig
    from sgsc_export.train.loop import train_float

    torch.manual_seed(0)
    m = digits_cnn()
    train_float(m, digits_split.x_train, digits_split.y_train, CompressConfig(float_epochs=2))
    return m


def test_selector_follows_sklearn_conventions(trained, digits_split):
    sel = PreservationSetSelector(size=60, random_state=3)
    assert not hasattr(sel, "selected_indices_")
    assert sel.fit(trained, (digits_split.x_train, digits_split.y_train)) is sel
    assert sel.size_ == 60 and len(sel.selected_indices_) == 60
    assert len(np.unique(sel.selected_indices_)) == 60  # de-duplicated by index
    assert sel.scores_.shape == (len(digits_split.x_train), 3)
    assert np.bincount(sel.criteria_, minlength=3).tolist() == [20, 20, 20]


def test_selector_is_deterministic(trained, digits_split):
    data = (digits_split.x_train, digits_split.y_train)
    a = PreservationSetSelector(size=50, random_state=1).fit(trained, data)
    b = PreservationSetSelector(size=50, random_state=1).fit(trained, data)
    assert np.array_equal(a.selected_indices_, b.selected_indices_)
    assert np.array_equal(a.scores_, b.scores_)


def test_criteria_pick_what_they_claim(trained, digits_split):
    data = (digits_split.x_train, digits_split.y_train)
    sel = PreservationSetSelector(size=90, budget=(1, 1, 1)).fit(trained, data)
    margin = sel.scores_[:, 0]
    unc = sel.selected_indices_[sel.criteria_ == 0]
    # the uncertainty picks are exactly the smallest margins
    assert set(unc) == set(np.argsort(margin, kind="stable")[: len(unc)])
    sal = sel.selected_indices_[sel.criteria_ == 1]
    others = np.setdiff1d(np.arange(len(margin)), sel.selected_indices_)
    assert sel.scores_[sal, 1].min() >= np.median(sel.scores_[others, 1])


def test_labels_come_from_the_same_index(trained, digits_split):
    sel = PreservationSetSelector(size=40).fit(trained, (digits_split.x_train, digits_split.y_train))
    assert np.array_equal(sel.labels(digits_split.y_train), digits_split.y_train[sel.selected_indices_])


def test_gradient_saliency_fallback_without_convolution():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    x = np.random.default_rng(0).normal(size=(50, 1, 4, 4)).astype(np.float32)
    y = np.arange(50) % 3
    sel = PreservationSetSelector(size=9).fit(m, (x, y))
    assert sel.size_ == 9 and np.all(sel.scores_[:, 1] > 0)


def test_default_size_and_bad_input(trained):
    assert default_size(1437) == 143 and default_size(50_000) == 1000 and default_size(3) == 1
    with pytest.raises(DataError, match="non-empty"):
        PreservationSetSelector().fit(trained, (np.zeros((0, 1, 8, 8), np.float32), np.zeros(0, np.int64)))
    with pytest.raises(ConfigError, match="preservation size"):
        PreservationSetSelector(size=10).fit(trained, (np.zeros((5, 1, 8, 8), np.float32),
                                                       np.zeros(5, np.int64)))


def test_kmeans_finds_separated_clusters_and_is_seeded():
    from sgsc_export.preservation.base import kmeans

    rng = np.random.default_rng(0)
    truth = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    z = np.concatenate([c + rng.normal(scale=0.5, size=(50, 2)) for c in truth])
    centres = kmeans(z, 3, random_state=1)
    assert np.abs(np.sort(centres, 0) - np.sort(truth, 0)).max() < 0.5
    np.testing.assert_array_equal(centres, kmeans(z, 3, random_state=1))
