import torch
from torch import nn

from sgsc_export import CompressConfig, prepare_
from sgsc_export.method.graph import find_links, fold_batchnorm_
from sgsc_export.method.nn import quantized_layers
from sgsc_export.method.objective import size_term, stored_size_bits
from sgsc_export.method.pruning import refresh_in_alive_, remove_dead_channels_


def chain():
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 6, 3, padding=1), nn.ReLU(), nn.Flatten(),
        nn.Linear(6 * 4 * 4, 7), nn.GELU(), nn.Dropout(0.1), nn.Linear(7, 3),
    )
    with torch.no_grad():  # non-trivial running statistics
        m[1].running_mean.uniform_(-1, 1)
        m[1].running_var.uniform_(0.5, 2)
        m[1].weight.uniform_(0.5, 1.5)
        m[1].bias.uniform_(-0.5, 0.5)
    return m.eval()


def test_batchnorm_folding_is_exact_and_replaces_bn():
    m = chain()
    x = torch.randn(5, 1, 8, 8)
    y0 = m(x)
    assert fold_batchnorm_(m) == [("0", "1")]
    assert isinstance(m[1], nn.Identity)
    torch.testing.assert_close(m(x), y0, rtol=1e-5, atol=1e-5)


def test_links_follow_unambiguous_chains():
    m = chain()
    fold_batchnorm_(m)
    prepare_(m)
    links = find_links(m)
    assert {k: (v.consumer, v.per_channel) for k, v in links.items()} == {"0": ("4", 1), "4": ("7", 16),
                                                                           "7": ("10", 1)}


def _kill(m, name, channels):
    with torch.no_grad():
        b = dict(quantized_layers(m))[name].b
        b.view(-1)[channels] = -0.5
        dict(quantized_layers(m))[name].bias.view(-1)[channels] = 3.0  # a bias that would leak if not masked


def test_removal_leaves_outputs_unchanged_and_shrinks_tensors():
    m = chain()
    fold_batchnorm_(m)
    prepare_(m, CompressConfig(init_bits=6))
    m.eval()
    links = find_links(m)
    _kill(m, "0", [1, 5])
    _kill(m, "4", [0, 2, 3])
    _kill(m, "7", [6])
    refresh_in_alive_(m, links)
    x = torch.randn(9, 1, 8, 8)
    before_out, before_bits = m(x), stored_size_bits(m)
    q_before = size_term(m, 1).item()
    removed = remove_dead_channels_(m, links)
    refresh_in_alive_(m, links)
    assert removed == {"0": 2, "4": 3, "7": 1}
    assert torch.equal(m(x), before_out)
    assert m[0].weight.shape == (6, 1, 3, 3) and m[4].weight.shape == (3, 6, 3, 3)
    assert m[7].weight.shape == (6, 48) and m[10].weight.shape == (3, 6)
    # eq. 5: the consumer's weights that read a pruned channel were already not counted
    assert stored_size_bits(m) == before_bits
    assert abs(size_term(m, 1).item() - q_before) < 1e-3


def _shifted_bn(bn: nn.modules.batchnorm._BatchNorm) -> None:
    """A trained BatchNorm: a mean and a shift, so that it maps 0 to ``β − μ·γ/σ ≠ 0``."""
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1, generator=torch.Generator().manual_seed(1))
        bn.bias.uniform_(-1, 1, generator=torch.Generator().manual_seed(2))


def test_an_unfolded_bn_on_the_way_breaks_the_link():
    """A dead channel's 0 becomes the BatchNorm's shift, which the consumer reads: removing the channel would
    change the output (issue 16), so there is no link and the channel stays masked."""
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 3)).eval()
    _shifted_bn(m[2])
    assert fold_batchnorm_(m) == []  # not directly after the conv
    prepare_(m)
    assert find_links(m) == {}


def test_linear_then_bn1d_is_folded_and_pruned_exactly():
    m = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2)).eval()
    _shifted_bn(m[1])
    x = torch.randn(3, 4)
    y = m(x)
    assert fold_batchnorm_(m) == []  # without an example the Linear's output rank is unknown: refused
    assert fold_batchnorm_(m, example=x) == [("0", "1")]
    torch.testing.assert_close(m(x), y)
    prepare_(m)
    links = find_links(m)
    assert set(links) == {"0"} and links["0"].consumer == "3"
    _kill(m, "0", [2])
    refresh_in_alive_(m, links)
    y = m(x)
    assert remove_dead_channels_(m, links) == {"0": 1}
    torch.testing.assert_close(m(x), y)


def test_a_linear_on_a_sequence_keeps_its_bn1d():
    """BatchNorm1d after a Linear on [N, L, C] normalises L, not the Linear's features: never folded."""
    m = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5)).eval()
    assert fold_batchnorm_(m, example=torch.randn(2, 5, 4)) == []


class SharedConv(nn.Module):
    """One conv called twice: slicing its weights for one call would change the other."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 3, 1)
        self.bn = nn.BatchNorm2d(3)
        self.b = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        return self.b(torch.relu(self.bn(self.a(x)))) + self.a(x)[:, :2]


def test_a_module_called_twice_is_neither_linked_nor_folded():
    m = SharedConv().eval()
    _shifted_bn(m.bn)
    assert fold_batchnorm_(m) == []
    prepare_(m)
    assert find_links(m) == {}


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        h = torch.relu(self.a(x))
        h = h + torch.relu(self.b(h))
        return self.head(h.mean((2, 3)))


def test_residual_channels_stay_masked_not_removed():
    m = Residual().eval()
    prepare_(m)
    links = find_links(m)
    assert "a" not in links and "b" not in links  # used twice / feeds an add
    _kill(m, "a", [0])
    y = m(torch.ones(1, 2, 5, 5))
    assert remove_dead_channels_(m, links) == {}
    assert m.a.weight.shape[0] == 4
    torch.testing.assert_close(m(torch.ones(1, 2, 5, 5)), y)


def test_sigmoid_breaks_the_chain():
    m = nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 2))
    prepare_(m)
    assert "0" not in find_links(m)


def test_revive_writes_data_not_a_tracked_leaf():
    from sgsc_export.method.pruning import revive_

    m = nn.Sequential(nn.Linear(3, 6))
    prepare_(m)
    _kill(m, "0", [0, 2, 4, 5])
    b_before = m[0].b
    out = revive_(m, ["0"], 0.5, 2.0, torch.Generator().manual_seed(0))
    assert m[0].b is b_before and m[0].b.requires_grad and m[0].b.grad_fn is None
    assert len(out["0"]) == 2 and torch.all(m[0].b.view(-1)[out["0"]] == 2.0)
    assert int(m[0].channel_alive().sum()) == 4
    m[0](torch.randn(2, 3)).sum().backward()  # still trains
    assert m[0].b.grad is not None


class Dense(nn.Module):
    """DenseNet-B: BN-ReLU-Conv1×1-BN-ReLU-Conv3×3, concatenated to its input (the zoo's crash, issue 16)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.body = nn.Sequential(nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 8, 1), nn.BatchNorm2d(8),
                                  nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
        self.head = nn.Linear(7, 2)

    def forward(self, x):
        h = self.stem(x)
        h = torch.cat([h, self.body(h)], 1)
        return self.head(h.mean((2, 3)))


def test_dense_block_prunes_only_where_removal_is_exact():
    m = Dense().eval()
    for bn in (m.body[0], m.body[3]):
        _shifted_bn(bn)
    x = torch.randn(4, 1, 6, 6)
    y = m(x)
    assert fold_batchnorm_(m) == [("body.2", "body.3")]
    torch.testing.assert_close(m(x), y)
    prepare_(m)
    links = find_links(m)
    assert set(links) == {"body.2"}  # stem feeds cat and BN; body.5 feeds cat
    for name in ("stem", "body.2", "body.5"):
        _kill(m, name, [1])
    refresh_in_alive_(m, links)
    y = m(x)
    assert remove_dead_channels_(m, links) == {"body.2": 1}
    torch.testing.assert_close(m(x), y)


class _Blocked(nn.Module):
    """One of each structure that keeps a layer's zero-bit channels masked."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.res = nn.Conv2d(4, 4, 3, padding=1)
        self.cat = nn.Conv2d(4, 4, 1)
        self.bn_after = nn.Conv2d(8, 4, 1)
        self.bn = nn.BatchNorm2d(4)
        self.pre = nn.BatchNorm2d(4)  # not after a conv: stays (between bn_after's output and dw)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        a = torch.relu(self.a(x))
        r = a + self.res(a)
        c = torch.cat([r, self.cat(r)], 1)
        b = self.pre(torch.relu(self.bn_after(c)))
        return self.fc(self.dw(b).mean((2, 3)))


def test_every_layer_without_a_link_says_why():
    model = _Blocked().eval()
    blocked = {}
    links = find_links(model, blocked=blocked)
    assert set(links) | set(blocked) == {"a", "res", "cat", "bn_after", "dw", "fc"}
    assert not set(links) & set(blocked)
    assert blocked["a"] == "its output is read more than once (a residual branch)"
    assert blocked["res"] == "its output meets another tensor in a residual add"
    assert blocked["cat"] == "its output meets another tensor in a concatenation"
    assert "a BatchNorm not folded into it (pre)" in blocked["bn_after"]
    assert blocked["dw"].startswith("a depthwise convolution whose input channels do not come from one ")
    assert blocked["fc"] == "its channels are the model's outputs"


class _SharedReLU(nn.Module):
    """A block that calls one ReLU module twice, as torchvision's BasicBlock does."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        h = self.relu(self.conv2(self.relu(self.conv1(x))))
        return self.fc(h.mean((2, 3)))


def test_a_stateless_module_called_twice_does_not_break_the_chain():
    """A ReLU holds nothing removal would slice: conv1 → relu → conv2 links although the block calls the same
    ReLU module twice, and removing conv1's dead channels leaves the output unchanged."""
    torch.manual_seed(0)
    model = _SharedReLU().eval()
    prepare_(model, CompressConfig(init_bits=4))
    links = find_links(model)
    assert links["conv1"].consumer == "conv2"
    layers = quantized_layers(model)
    with torch.no_grad():
        layers["conv1"].b[:2] = -1.0  # two channels at zero bits
    refresh_in_alive_(model, links)
    x = torch.randn(3, 1, 6, 6)
    with torch.no_grad():
        before = model(x)
        assert remove_dead_channels_(model, links)["conv1"] == 2
        refresh_in_alive_(model, links)
        assert torch.allclose(model(x), before, atol=1e-6)


class _InvertedResidual(nn.Module):
    """MobileNetV2's block: 1×1 expand → BN → ReLU6 → 3×3 depthwise → BN → ReLU6 → 1×1 project → BN, + x."""

    def __init__(self, c: int = 4, hidden: int = 8) -> None:
        super().__init__()
        self.expand, self.bn1 = nn.Conv2d(c, hidden, 1), nn.BatchNorm2d(hidden)
        self.dw, self.bn2 = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden), nn.BatchNorm2d(hidden)
        self.project, self.bn3 = nn.Conv2d(hidden, c, 1), nn.BatchNorm2d(c)
        self.act = nn.ReLU6()
        self.fc = nn.Linear(c, 3)

    def forward(self, x):
        h = self.act(self.bn2(self.dw(self.act(self.bn1(self.expand(x))))))
        return self.fc((x + self.bn3(self.project(h))).mean((2, 3)))


def _block(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = _InvertedResidual()
    for bn in (m.bn1, m.bn2, m.bn3):
        _shifted_bn(bn)
    return m.eval()


def test_a_depthwise_channel_leaves_with_its_input_channel_and_the_expand_channel_that_fed_it():
    """Issue 17: the expand → depthwise → project group. A zero-bit depthwise channel outputs 0 whatever it
    reads, so it goes with the project conv's input and the expand conv's channel (nothing else reads it); a
    zero-bit expand channel under a live depthwise channel stays (the depthwise bias is a constant the project
    conv reads). The output is bit-identical, the depthwise conv stays depthwise, and the artifact's rebuild
    follows."""
    from sgsc_export.artifact.rebuild import load_state_resizing_

    m = _block()
    fold_batchnorm_(m)
    prepare_(m, CompressConfig(init_bits=6))
    m.eval()
    blocked = {}
    links = find_links(m, blocked=blocked)
    assert links["dw"].consumer == "project" and links["dw"].upstream == "expand"
    assert blocked["expand"].startswith("it feeds the depthwise convolution dw")
    _kill(m, "dw", [1, 4])
    _kill(m, "expand", [2])  # under a live depthwise channel: stays
    refresh_in_alive_(m, links)
    x = torch.randn(5, 4, 6, 6)
    before, before_bits = m(x), stored_size_bits(m)
    assert remove_dead_channels_(m, links) == {"dw": 2}
    refresh_in_alive_(m, links)
    assert torch.equal(m(x), before)
    assert m.expand.weight.shape == (6, 4, 1, 1) and m.dw.weight.shape == (6, 1, 3, 3)
    assert m.dw.groups == m.dw.in_channels == m.dw.out_channels == 6
    assert m.project.weight.shape == (4, 6, 1, 1)
    assert stored_size_bits(m) < before_bits  # the expand channels that fed them were stored, and are gone
    assert int((~dict(quantized_layers(m))["expand"].channel_alive()).sum()) == 1  # masked, not removed

    fresh = _block()
    fold_batchnorm_(fresh)
    prepare_(fresh, CompressConfig(init_bits=6))
    load_state_resizing_(fresh, m.state_dict())
    assert fresh.dw.groups == 6 and torch.equal(fresh.eval()(x), before)


def test_a_depthwise_conv_after_a_residual_sum_keeps_its_channels():
    """Its input is not one producer's channels: no link, and the reason says so."""

    class _AfterAdd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 4, 1), nn.Conv2d(1, 4, 1)
            self.dw, self.fc = nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.Conv2d(4, 2, 1)

        def forward(self, x):
            return self.fc(self.dw(self.a(x) + self.b(x)))

    blocked = {}
    links = find_links(_AfterAdd().eval(), blocked=blocked)
    assert "dw" not in links and "a" not in links
    assert "depthwise convolution whose input channels do not come from one" in blocked["dw"]
