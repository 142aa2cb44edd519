"""The language-model path keeps the toolchain's promises: same seed → same artifact; resume is lossless,
also with a fixed preservation file."""

import json

import pytest

from sgsc_export import CompressConfig, compress, load_dataset
from sgsc_export.datasets.text import with_preservation_file
from sgsc_export.models.charlm import char_transformer
from sgsc_export.train import compress as api
from tests.conftest import NAMES_DIR, names_subset

KW = {"vocab_size": 27, "context": 32, "n_embd": 16, "n_head": 2, "n_layer": 1}
SPEC = {"factory": "sgsc_export.charlm:char_transformer", "kwargs": KW}
SMALL = dict(steps=20, float_epochs=1, batch_size=32, restore_every=10, checkpoint_every=10, prune_every=10,
             preservation_batch_size=32, gamma=1.0, seed=3)


def _files(d):
    return json.loads((d / "manifest.json").read_text())["files"]


def test_lm_resume_is_lossless_with_preservation_file(tmp_path, monkeypatch):
    data = with_preservation_file(load_dataset(f"text:{names_subset(tmp_path, 300)}"),
                                  NAMES_DIR / "hardest_examples.txt")
    a, c = tmp_path / "a", tmp_path / "c"
    compress(char_transformer(**KW), data, CompressConfig(**SMALL), out_dir=a, model_spec=SPEC)

    real_save = api.save_checkpoint

    def save_then_interrupt(path, payload):
        real_save(path, payload)
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "save_checkpoint", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        compress(char_transformer(**KW), data, CompressConfig(**SMALL), out_dir=c, model_spec=SPEC)
    monkeypatch.setattr(api, "save_checkpoint", real_save)
    compress(char_transformer(**KW), data, CompressConfig(**SMALL), out_dir=c, model_spec=SPEC, resume=True)
    assert _files(c) == _files(a)  # a fresh run and an interrupted + resumed one: the same bytes
    before = {name: (a / name).read_bytes() for name in ("manifest.json", "history.json")}
    assert before["manifest.json"] == (c / "manifest.json").read_bytes()
    compress(char_transformer(**KW), data, CompressConfig(**SMALL), out_dir=a, model_spec=SPEC, resume=True)
    # resuming a finished run changes nothing
    assert {name: (a / name).read_bytes() for name in before} == before
