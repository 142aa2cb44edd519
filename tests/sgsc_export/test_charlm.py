"""The character-level language model: task maths, causality, quantised layers, head and unit removal."""

import numpy as np
import pytest
import torch

from sgsc_export import CompressConfig
from sgsc_export.artifact.rebuild import load_state_resizing_
from sgsc_export.method.graph import find_links
from sgsc_export.method.heads import remove_dead_heads_
from sgsc_export.method.nn import QEmbedding, QLinear, prepare_, quantized_layers
from sgsc_export.method.pruning import refresh_in_alive_, remove_dead_channels_
from sgsc_export.models.charlm import char_transformer
from sgsc_export.tasks import LANGUAGE_MODEL, PAD


def _model(seed=0):
    torch.manual_seed(seed)
    return char_transformer(vocab_size=11, context=8, n_embd=16, n_head=4, n_layer=2).eval()


def test_causal_and_dynamic_length():
    m = _model()
    x = torch.randint(0, 11, (3, 8))
    y = m(x)
    assert y.shape == (3, 8, 11)
    x2 = x.clone()
    x2[:, 5:] = (x2[:, 5:] + 1) % 11
    assert torch.equal(m(x2)[:, :5], y[:, :5])  # the future never changes the past
    assert torch.allclose(m(x[:, :5]), y[:, :5], atol=1e-6)


def test_language_model_task_ignores_padding_and_trims_exactly():
    logits = torch.randn(2, 4, 5)
    y = torch.tensor([[1, 2, PAD, PAD], [3, PAD, PAD, PAD]])
    real = y != PAD
    want = torch.nn.functional.cross_entropy(logits[real], y[real])
    assert torch.allclose(LANGUAGE_MODEL.loss(logits, y), want)
    assert LANGUAGE_MODEL.mean_loss(logits.numpy(), y.numpy()) == pytest.approx(float(want), abs=1e-6)
    x = torch.zeros(2, 4, dtype=torch.long)
    xt, yt = LANGUAGE_MODEL.trim(x, y)
    assert xt.shape == (2, 2) and torch.equal(yt, y[:, :2])
    m = LANGUAGE_MODEL.metrics(logits.numpy(), y.numpy(), "test")
    assert m["test_perplexity"] == pytest.approx(np.exp(m["test_loss"]))


def test_every_linear_and_embedding_is_quantised_layernorm_stays_float():
    m = _model()
    left = prepare_(m, CompressConfig())
    layers = quantized_layers(m)
    assert isinstance(layers["tok"], QEmbedding) and isinstance(layers["pos"], QEmbedding)
    for b in range(2):
        for name in ("attn.q", "attn.k", "attn.v", "attn.out", "fc1", "fc2"):
            assert isinstance(layers[f"blocks.{b}.{name}"], QLinear)
    assert isinstance(layers["head"], QLinear)
    assert all("ln" in name for name in left)
    assert layers["tok"].b.shape == (11, 1)  # one bit-depth per row (token)


@torch.no_grad()
def test_removing_dead_heads_and_hidden_units_leaves_outputs_unchanged():
    m = _model(1)
    prepare_(m, CompressConfig())
    links = find_links(m)
    assert links["blocks.0.fc1"].consumer == "blocks.0.fc2"  # the feed-forward link is found by tracing
    assert not any(k.endswith(("attn.q", "attn.k", "attn.v")) for k in links)  # reshaped: never a plain link
    attn = m.blocks[0].attn
    hd = attn.head_dim
    attn.v.b.view(-1)[hd : 2 * hd] = -1.0  # head 1: every value channel at zero bits
    attn.q.b.view(-1)[0:3] = -1.0  # scattered dead query channels: masked, never removed
    m.blocks[1].attn.q.b.view(-1)[2 * hd : 3 * hd] = -1.0  # q/k-dead head: attends uniformly, must stay
    m.blocks[1].attn.k.b.view(-1)[2 * hd : 3 * hd] = -1.0
    m.blocks[1].fc1.b.view(-1)[[0, 5, 9]] = -1.0
    refresh_in_alive_(m, links)
    assert float(attn.out.in_alive[hd : 2 * hd].sum()) == 0.0  # Q counts those columns as reading nothing
    x = torch.randint(0, 11, (4, 8))
    before = m(x)
    removed = remove_dead_channels_(m, links)
    heads = remove_dead_heads_(m)
    refresh_in_alive_(m, links)
    after = m(x)
    assert removed == {"blocks.1.fc1": 3}
    assert heads == {"blocks.0.attn": 1}
    assert attn.n_head == 3 and attn.q.weight.shape == (3 * hd, 16) and attn.out.weight.shape == (16, 3 * hd)
    assert m.blocks[1].attn.n_head == 4
    assert torch.allclose(before, after, atol=1e-5)

    # the smaller state rebuilds into a fresh model from the factory alone
    fresh = _model(2)
    prepare_(fresh, CompressConfig())
    load_state_resizing_(fresh, m.state_dict())
    assert torch.allclose(fresh.eval()(x), after, atol=1e-6)
