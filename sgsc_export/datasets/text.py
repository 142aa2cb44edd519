"""Text data for the character-level language model: ``names`` (one item per line) and ``text:PATH``.

Items are lines. Each item becomes one sequence ``⏎ c₁ … cₙ ⏎`` over a vocabulary built from the data, with
the boundary token ``\\n`` at index 0; the model reads ``x = seq[:-1]`` and predicts ``y = seq[1:]``, both
padded to the context length (``x`` with 0, ``y`` with :data:`~sgsc_export.tasks.PAD`, which the loss
ignores). Because attention is causal, padding after the end never changes a real position's prediction. A
line longer than the context is cut into context − 1 character pieces (``text:PATH``; no name is that long).

The 90/10 train/test split is of the *items*, with a fixed seed — never of the character stream — so no test
name is seen in part during training. The preservation set is later chosen from ``x_train`` only, or read from
a ``--preservation-file`` (the paper's hand-made list), encoded the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sgsc_export._io import read_bytes_bounded
from sgsc_export.errors import DataError
from sgsc_export.tasks import PAD

__all__ = ["BOUNDARY", "TextSplit", "encode_items", "load_names", "load_text", "read_items"]

BOUNDARY = "\n"
CONTEXT = 32


@dataclass
class TextSplit:
    """Token sequences of the train and test items; the same attributes as
    :class:`sgsc_export.datasets.images.Split`."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    vocab: str
    context: int = CONTEXT
    x_preservation: np.ndarray | None = None  # a fixed preservation set (``--preservation-file``)
    y_preservation: np.ndarray | None = None
    preservation_source: str = ""

    task = "language_model"

    def __post_init__(self) -> None:
        for part in ("train", "test"):
            if len(getattr(self, f"x_{part}")) == 0:
                raise DataError(f"{self.name}: the {part} split is empty; the text needs at least 2 "
                                "non-empty lines")
        if not isinstance(self.vocab, str) or not self.vocab:
            raise DataError(f"{self.name}: the vocabulary must be a non-empty string")
        v = len(self.vocab)
        for part in ("train", "test", "preservation"):
            x, y = getattr(self, f"x_{part}"), getattr(self, f"y_{part}")
            if part == "preservation" and x is None and y is None:
                continue
            # token sequences [N, context]: x in [0, V), y in [0, V) or PAD (a padding target)
            for arr, lo, what in ((x, 0, "x"), (y, PAD, "y")):
                if (not isinstance(arr, np.ndarray) or arr.ndim != 2 or arr.shape[1] != self.context
                        or not np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
                    raise DataError(f"{self.name}: {what}_{part} must be integer tokens of shape [N, "
                                    f"{self.context}]")
                if arr.size and (int(arr.min()) < lo or int(arr.max()) >= v):
                    raise DataError(f"{self.name}: {what}_{part} holds a token outside [{lo}, {v}) "
                                    f"(the vocabulary has {v} symbols)")
            if len(x) != len(y):
                raise DataError(f"{self.name}: x_{part} has {len(x)} sequences but y_{part} has {len(y)}")

    @property
    def num_classes(self) -> int:
        return len(self.vocab)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.context,)

    def encode(self, items: list[str], source: str) -> tuple[np.ndarray, np.ndarray]:
        return encode_items(items, self.vocab, self.context, source)


def read_items(path: str | Path) -> list[str]:
    """Non-empty lines of a UTF-8 file, without their line ends."""
    p = Path(path)
    raw = read_bytes_bounded(p, "text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"cannot read {p} as UTF-8 text: {exc}") from exc
    return [line for line in (raw.rstrip("\r") for raw in text.split("\n")) if line.strip()]


def _pieces(items: list[str], context: int) -> list[str]:
    width = context - 1
    return [item[s : s + width] for item in items for s in range(0, len(item), width)]


def encode_items(items: list[str], vocab: str, context: int,
                 source: str = "text") -> tuple[np.ndarray, np.ndarray]:
    """Items → (x, y) int64 ``[N, context]``: inputs padded with 0, targets with PAD."""
    index = {c: i for i, c in enumerate(vocab)}
    pieces = _pieces(items, context)
    x = np.zeros((len(pieces), context), np.int64)
    y = np.full((len(pieces), context), PAD, np.int64)
    for n, item in enumerate(pieces):
        try:
            ids = [0] + [index[c] for c in item] + [0]
        except KeyError as exc:
            raise DataError(f"{source}: character {exc.args[0]!r} of {item!r} is not in the vocabulary "
                            "of the training data") from None
        x[n, : len(ids) - 1] = ids[:-1]
        y[n, : len(ids) - 1] = ids[1:]
    return x, y


def _split(name: str, items: list[str], seed: int, context: int) -> TextSplit:
    if len(items) < 2:
        raise DataError(f"{name}: {len(items)} non-empty line(s); a train/test split needs at least 2")
    vocab = BOUNDARY + "".join(sorted(set("".join(items)) - {BOUNDARY}))
    perm = np.random.default_rng(seed).permutation(len(items))
    n_test = max(1, int(round(0.1 * len(items))))
    test = [items[i] for i in perm[:n_test]]
    train = [items[i] for i in perm[n_test:]]
    x_tr, y_tr = encode_items(train, vocab, context, name)
    x_te, y_te = encode_items(test, vocab, context, name)
    return TextSplit(name, x_tr, y_tr, x_te, y_te, vocab, context)


def load_names(data_dir: str | Path | None, seed: int = 0, context: int = CONTEXT) -> TextSplit:
    """``DIR/names.txt`` (the SGSC paper's 32k names), 90/10 split of the names with a fixed seed."""
    if data_dir is None:
        raise DataError("--dataset names needs --data-dir DIR holding names.txt (e.g. ../shared/data/names); "
                        "for your own text use --dataset text:PATH")
    path = Path(data_dir) / "names.txt"
    if not path.is_file():
        raise DataError(f"no names.txt in {data_dir}; point --data-dir at the directory holding it, "
                        "or use --dataset text:PATH")
    return _split("names", read_items(path), seed, context)


def load_text(path: str | Path, seed: int = 0, context: int = CONTEXT) -> TextSplit:
    """Any UTF-8 file, one item per line, 90/10 split of the lines with a fixed seed."""
    return _split(f"text:{Path(path).name}", read_items(path), seed, context)


def with_preservation_file(data: TextSplit, path: str | Path) -> TextSplit:
    """Use the items of ``path`` (e.g. the paper's ``hardest_examples.txt``) as the preservation set."""
    items = read_items(path)
    if not items:
        raise DataError(f"preservation file {path} has no non-empty line")
    data.x_preservation, data.y_preservation = data.encode(items, f"preservation file {Path(path).name}")
    data.preservation_source = f"file:{Path(path).name}"
    return data
