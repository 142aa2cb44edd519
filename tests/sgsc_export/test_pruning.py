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


def test_a_residual_channel_leaves_only_when_every_summand_has_it_at_zero_bits():
    """Issue 17: ``h + relu(b(h))`` couples channel c of ``a`` and ``b`` (a group read by ``b`` and, after a
    spatial mean, by ``head``). Dead in ``a`` alone, channel 0 stays (b still writes it into the sum); dead in
    both, it leaves both producers and both consumers' inputs, and the output does not change."""
    m = Residual().eval()
    prepare_(m)
    links = find_links(m)
    assert set(links) == {"a"} and links["a"].producers == ["a", "b"]
    assert links["a"].consumers == [("b", 1), ("head", 1)]
    x = torch.randn(3, 2, 5, 5)
    _kill(m, "a", [0, 2])
    _kill(m, "b", [2])
    refresh_in_alive_(m, links)
    y = m(x)
    assert remove_dead_channels_(m, links) == {"a": 1, "b": 1}  # channel 2 only: 0 is alive in b
    refresh_in_alive_(m, links)
    assert m.a.weight.shape[0] == m.b.weight.shape[0] == m.b.weight.shape[1] == m.head.weight.shape[1] == 3
    torch.testing.assert_close(m(x), y, rtol=1e-6, atol=1e-6)  # the convolutions sum fewer zeros


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
    group = "; its channel group: its channels go through a concatenation"  # r = a + res(a) feeds the cat
    assert blocked["a"] == "its output is read more than once (a residual branch)" + group
    assert blocked["res"] == "its output meets another tensor in a residual add" + group
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


class _Block(nn.Module):
    """A ResNet basic block, with a 1×1 projection shortcut where the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.short = (nn.Sequential() if stride == 1 and cin == cout else
                      nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.b2(self.c2(self.act(self.b1(self.c1(x))))) + self.short(x))


class _ResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.l1 = nn.Sequential(_Block(8, 8, 1), _Block(8, 8, 1))
        self.l2 = nn.Sequential(_Block(8, 12, 2), _Block(12, 12, 1))
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(12, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.l2(self.l1(self.stem(x)))), 1))


def _resnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = _ResNet().eval()
    for bn in m.modules():
        if isinstance(bn, nn.BatchNorm2d):
            _shifted_bn(bn)
    fold_batchnorm_(m)
    prepare_(m, CompressConfig(init_bits=6))
    return m.eval()


def test_a_resnet_stage_is_one_channel_group_across_its_adds():
    """The stem and every block's last conv of a stage write the same channels (the identity shortcuts sum
    them); each block's first conv, the next stage's first conv and its projection shortcut read them. A
    channel dead in all of the stage's producers leaves every one of those tensors; dead in only some, it
    stays masked; the model rebuilt from the state dict computes the same."""
    from sgsc_export.artifact.rebuild import load_state_resizing_

    m = _resnet()
    blocked = {}
    links = find_links(m, blocked=blocked)
    assert links["stem.0"].producers == ["stem.0", "l1.0.c2", "l1.1.c2"]
    assert links["stem.0"].consumers == [("l1.0.c1", 1), ("l1.1.c1", 1), ("l2.0.c1", 1), ("l2.0.short.0", 1)]
    assert links["l2.0.c2"].producers == ["l2.0.c2", "l2.0.short.0", "l2.1.c2"]
    assert links["l2.0.c2"].consumers == [("fc", 1), ("l2.1.c1", 1)]  # fc after pool and flatten
    assert set(blocked) == {"fc"}
    for name in ("stem.0", "l1.0.c2", "l1.1.c2"):
        _kill(m, name, [1, 3])
    _kill(m, "l1.0.c2", [5])  # its partners still write channel 5: it stays
    for name in ("l2.0.c2", "l2.0.short.0", "l2.1.c2"):
        _kill(m, name, [0])
    refresh_in_alive_(m, links)
    x = torch.randn(4, 1, 8, 8)
    before, before_bits = m(x), stored_size_bits(m)
    removed = remove_dead_channels_(m, links)
    refresh_in_alive_(m, links)
    assert removed == {"stem.0": 2, "l1.0.c2": 2, "l1.1.c2": 2, "l2.0.c2": 1, "l2.0.short.0": 1, "l2.1.c2": 1}
    torch.testing.assert_close(m(x), before, rtol=1e-6, atol=1e-6)
    assert m.stem[0].weight.shape[0] == m.l1[1].c2.weight.shape[0] == m.l2[0].c1.weight.shape[1] == 6
    assert m.l2[0].short[0].weight.shape == (11, 6, 1, 1) and m.fc.weight.shape == (3, 11)
    assert stored_size_bits(m) == before_bits  # dead channels and the inputs reading them were not counted
    assert int((~dict(quantized_layers(m))["l1.0.c2"].channel_alive()).sum()) == 1  # masked, not removed

    fresh = _resnet()
    load_state_resizing_(fresh, m.state_dict())
    torch.testing.assert_close(fresh.eval()(x), before, rtol=1e-6, atol=1e-6)


def test_the_size_term_counts_a_groups_consumer_inputs_until_the_last_producer_drops_the_channel():
    m = _resnet()
    links = find_links(m)
    stem = dict(quantized_layers(m))["stem.0"]
    _kill(m, "stem.0", [2])
    refresh_in_alive_(m, links)
    assert bool(m.l1[0].c1.in_alive[2])  # l1's blocks still write channel 2 into the sum
    for name in ("l1.0.c2", "l1.1.c2"):
        _kill(m, name, [2])
    refresh_in_alive_(m, links)
    assert not any(bool(c.in_alive[2]) for c in (m.l1[0].c1, m.l1[1].c1, m.l2[0].c1, m.l2[0].short[0]))
    assert not bool(stem.channel_alive()[2])


class _Refused(nn.Module):
    """Groups that removal would get wrong: the model's input summed in, a broadcast sum, a LayerNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 1, 1)
        self.c, self.d = nn.Conv2d(4, 4, 1), nn.Linear(4, 4)
        self.norm, self.e, self.fc = nn.LayerNorm(4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.a(x) + x          # the input is no layer's output
        h = self.c(h) + self.b(h)  # 4 + 1 channels: a broadcast
        t = h.mean((2, 3))
        t = self.d(t)
        t = t + self.e(self.norm(t))  # a LayerNorm reads the group
        return self.fc(t)


def test_a_group_is_refused_whole_where_removal_could_change_the_output():
    blocked = {}
    links = find_links(_Refused().eval(), blocked=blocked)
    assert not {"a", "b", "c", "d", "e"} & set(links)
    assert blocked["a"].endswith("its channel group: the model's input is summed into its channels")
    assert "a broadcast sum" in blocked["c"] or "a broadcast sum" in blocked["b"]
    assert blocked["d"].endswith("its channel group: its channels go through norm (LayerNorm)")


def test_channel_groups_are_the_same_every_time():
    assert repr(find_links(_resnet(0))) == repr(find_links(_resnet(1)))
