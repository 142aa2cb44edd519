"""Text data sets: items, vocabulary, the 90/10 split of items, the text preservation set, errors."""

from pathlib import Path

import numpy as np
import pytest
import torch

from sgsc_export import DataError, load_dataset
from sgsc_export.datasets.text import encode_items, with_preservation_file
from sgsc_export.models.charlm import char_transformer
from sgsc_export.preservation.text import TextPreservationSelector
from sgsc_export.tasks import PAD

NAMES = Path(__file__).resolve().parents[3] / "shared" / "data" / "names"


def test_encode_items_pads_and_shifts():
    x, y = encode_items(["ab", "c"], "\nabc", 5)
    assert x.tolist() == [[0, 1, 2, 0, 0], [0, 3, 0, 0, 0]]
    assert y.tolist() == [[1, 2, 0, PAD, PAD], [3, 0, PAD, PAD, PAD]]
    with pytest.raises(DataError, match="not in the vocabulary"):
        encode_items(["z"], "\nabc", 5)


def test_text_path_splits_items_and_long_lines(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("\n".join(f"item{i}" for i in range(40)) + "\n" + "x" * 70 + "\n\n")
    d = load_dataset(f"text:{p}")
    assert d.task == "language_model" and d.vocab[0] == "\n" and d.input_shape == (32,)
    assert len(d.x_test) == 4  # 10 % of 41 items, rounded
    assert len(d.x_train) + len(d.x_test) == 40 + 3  # the 70-character line became 3 pieces


def test_errors_are_one_line_and_say_what_to_do(tmp_path):
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset("names")
    with pytest.raises(DataError, match="no names.txt"):
        load_dataset("names", tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"text:{tmp_path / 'missing.txt'}")
    (tmp_path / "one.txt").write_text("only\n")
    with pytest.raises(DataError, match="at least 2"):
        load_dataset(f"text:{tmp_path / 'one.txt'}")


@pytest.mark.skipif(not (NAMES / "names.txt").is_file(), reason=f"the names data is not at {NAMES}")
def test_names_split_is_of_items_with_a_fixed_seed():
    a, b = load_dataset("names", NAMES), load_dataset("names", NAMES)
    assert np.array_equal(a.x_test, b.x_test) and len(a.vocab) == 27
    n = len(a.x_train) + len(a.x_test)
    assert len(a.x_test) == round(0.1 * n)
    train = {r.tobytes() for r in a.x_train}
    assert sum(r.tobytes() in train for r in a.x_test) < 0.2 * len(a.x_test)  # only duplicate names recur
    hard = with_preservation_file(a, NAMES / "hardest_examples.txt")
    assert len(hard.x_preservation) == 1000 and hard.preservation_source == "file:hardest_examples.txt"


def test_text_preservation_selector_is_exact_size_and_deterministic(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("\n".join(("abc" * (i % 7 + 1))[: i % 11 + 1] for i in range(120)) + "\n")
    d = load_dataset(f"text:{p}")
    torch.manual_seed(0)
    m = char_transformer(d.num_classes, n_embd=16, n_head=2, n_layer=1).eval()
    s1 = TextPreservationSelector(12, random_state=3).fit(m, (d.x_train, d.y_train))
    s2 = TextPreservationSelector(12, random_state=3).fit(m, (d.x_train, d.y_train))
    assert len(set(s1.selected_indices_.tolist())) == 12
    assert np.array_equal(s1.selected_indices_, s2.selected_indices_)
    assert np.bincount(s1.criteria_, minlength=3).tolist() == [4, 4, 4]
    assert s1.scores_.shape == (len(d.x_train), 3)
    top_loss = int(np.argmax(s1.scores_[:, 0]))
    assert s1.selected_indices_[0] == top_loss  # the hardest sequence comes first
