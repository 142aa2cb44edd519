import pytest
import torch
from torch import nn

from sgsc_export import CompressConfig, QConv1d, QConv2d, QLinear, prepare_
from sgsc_export.method.nn import quantized_layers
from sgsc_export.method.packed import QMultiheadAttention
from sgsc_export.train.loop import make_optimizer


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=4)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.seq = nn.Conv1d(8, 4, 3)
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 5)

    def forward(self, x):
        h = self.depthwise(self.grouped(self.conv(x)))
        h = self.seq(h.mean(2)).transpose(1, 2)
        h, _ = self.attn(h, h, h)
        return self.head(self.norm(h).mean(1))


def test_prepare_swaps_every_supported_layer_in_place():
    torch.manual_seed(0)
    m = Mixed()
    x = torch.randn(2, 3, 6, 6)
    left = prepare_(m, CompressConfig(init_bits=8))
    assert isinstance(m.conv, QConv2d) and isinstance(m.grouped, QConv2d) and isinstance(m.depthwise, QConv2d)
    assert isinstance(m.seq, QConv1d) and isinstance(m.head, QLinear)
    # nn.MultiheadAttention's out_proj (a Linear subclass without its own forward) is quantised; the block
    # reads it directly (F.multi_head_attention_forward), and its quantised tensors stand in while it runs
    # (tests/sgsc_export/test_coverage.py). The block itself has a twin too, which quantises in_proj_weight
    # (sgsc_export.method.packed); only LayerNorm is left float.
    assert isinstance(m.attn.out_proj, QLinear) and isinstance(m.attn, QMultiheadAttention)
    assert left == ["norm"]
    assert {"attn.in_proj_weight", "attn.out_proj"} <= set(quantized_layers(m))
    assert m(x).shape == (2, 5)
    assert m.grouped.b.shape == (8, 1, 1, 1)


def test_prepare_keeps_parameters_and_excludes_by_name_and_filter():
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3), nn.Linear(3, 2))
    w = m[0].weight
    left = prepare_(m, CompressConfig(exclude=("2",)), filter_fn=lambda mod, name: name != "3")
    assert m[0].weight is w  # the same Parameter, not a copy
    assert type(m[2]) is nn.Linear and type(m[3]) is nn.Linear
    assert left == ["2", "3"]


def test_init_covers_weight_range_at_init_bits():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(64, 16))
    prepare_(m, CompressConfig(init_bits=8))
    layer = m[0]
    err = (layer.qweight() - layer.weight).abs().max()
    assert err <= torch.exp2(layer.e).max() / 2 + 1e-7


def test_zero_bit_channel_outputs_exact_zero():
    m = nn.Sequential(nn.Conv2d(1, 3, 3))
    prepare_(m)
    with torch.no_grad():
        m[0].bias.fill_(0.7)
        m[0].b.view(-1)[1] = 0.0
    out = m(torch.randn(2, 1, 5, 5))
    assert torch.count_nonzero(out[:, 1]) == 0 and torch.count_nonzero(out[:, 0]) > 0


def test_optimizer_groups_separate_bits_without_weight_decay():
    m = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten(), nn.Linear(27, 2))
    cfg = CompressConfig(weight_decay=1e-4)
    prepare_(m, cfg)
    opt = make_optimizer(m, cfg)
    weights, bits, exponents = opt.param_groups  # the default lr_exponent (0.05) gives e its own group
    layers = quantized_layers(m).values()
    assert {id(p) for p in bits["params"]} == {id(layer.b) for layer in layers}
    assert {id(p) for p in exponents["params"]} == {id(layer.e) for layer in layers}
    be = {id(p) for layer in layers for p in (layer.b, layer.e)}
    assert not be & {id(p) for p in weights["params"]}
    assert bits["weight_decay"] == 0.0 and bits["lr"] == cfg.lr_bits and bits["eps"] == cfg.eps_bits
    assert exponents["weight_decay"] == 0.0 and exponents["lr"] == cfg.lr_exponent == 0.05
    assert weights["weight_decay"] == 1e-4
    shared = CompressConfig(lr_exponent=None)  # None: b and e share one group at lr_bits (the presets')
    _, both = make_optimizer(m, shared).param_groups
    assert {id(p) for p in both["params"]} == be and both["lr"] == shared.lr_bits


@pytest.mark.parametrize("bad", [dict(gamma=-1), dict(init_bits=0), dict(max_bits=9), dict(steps=-1),
                                 dict(preservation_budget=(0, 0, 0)), dict(version=99)])
def test_config_rejects_out_of_range_naming_the_field(bad):
    from sgsc_export import ConfigError

    with pytest.raises(ConfigError, match=next(iter(bad))):
        CompressConfig(**bad)


def test_config_json_round_trip():
    cfg = CompressConfig(gamma=0.2, exclude=("a",))
    assert CompressConfig.from_dict(cfg.to_dict()) == cfg
