"""Same seed, same bytes for a model built from ``nn.MultiheadAttention`` too (issue 16, item 5).

``nn.MultiheadAttention`` initialises its packed ``in_proj_weight`` in ``_reset_parameters``, not
``reset_parameters``: the float reference kept the weights drawn when the model was built, so two runs with
the same seed differed whenever the RNG held something else at construction time.
"""

import hashlib

import torch

from sgsc_export import CompressConfig, compress
from sgsc_export.train.compress import reinitialise_, train_reference
from tests.converters.recurrent_models import TinyViT  # 2×2 patches, two encoder blocks, mean pool


def _built_after(seed: int) -> TinyViT:
    torch.manual_seed(seed)  # whatever the caller's RNG held when the model was built
    return TinyViT(heads=2)


def _digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k, v in state.items():
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def test_reinitialise_covers_multihead_attention():
    a, b = _built_after(1), _built_after(2)
    torch.manual_seed(0)
    left = reinitialise_(a)
    torch.manual_seed(0)
    reinitialise_(b)
    assert left == ["pos"]  # only the user's own parameter keeps its built value
    assert _digest(a.state_dict()) == _digest(b.state_dict())


def test_float_training_and_compress_are_byte_identical(tmp_path, digits_split):
    cfg = CompressConfig(float_epochs=1, steps=20, finetune_steps=4, restore_every=10, prune_every=10,
                         checkpoint_every=10, seed=3)
    refs = [train_reference(_built_after(s), digits_split, cfg) for s in (1, 2)]
    assert _digest(refs[0].state_dict()) == _digest(refs[1].state_dict())
    outs = [tmp_path / "a", tmp_path / "b"]
    for seed, out in zip((1, 2), outs):
        compress(_built_after(seed), digits_split, cfg, out_dir=out)
    files = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(outs[1]) for p in outs[1].rglob("*") if p.is_file())
    for f in files:
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes(), f
