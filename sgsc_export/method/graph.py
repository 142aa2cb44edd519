"""What follows what in a model: BatchNorm folding and the producer → consumer links that pruning needs.

Both read the model's dataflow from ``torch.fx.symbolic_trace``. A link is only recorded where the consumer of
a layer's output channels is unambiguous and removal provably leaves the output unchanged: a single chain of
channel-wise steps that map 0 to 0 (an activation with act(0) = 0, pooling, dropout, one flatten) ending in
one Conv (groups = 1) or Linear. Anything else — residual adds, concatenations, reshapes, a value used twice,
a BatchNorm that was not folded into its producer (it maps a dead channel's 0 to ``β − μ·γ/σ``, which the
consumer reads), a module called more than once (its weights serve every call; slicing them for one call
changes the others) — breaks the chain, and the producer's zero-bit channels are kept as masked channels
instead of removed. A model that fx cannot trace gets no links at all (said in the manifest), which is always
safe.

A depthwise convolution (groups = in = out channels: output channel c reads input channel c alone) links too,
as a group of three: where its input is one producer's output through such a chain (``Link.upstream``), a
zero-bit depthwise channel c outputs 0 whatever it reads, so it leaves with the consumer's input c *and* the
upstream producer's channel c, which nothing else reads (an inverted-residual block's expand → depthwise →
project). The reverse does not hold: a zero-bit upstream channel under a live depthwise channel gives that
channel's bias, a constant the consumer reads, so it stays until the depthwise channel reaches zero bits (the
size term keeps pushing it: its weights read nothing, so only the size term moves their bits).

**Channel groups across residual sums and branches** (``_group``). Where a producer's output is read more than
once or meets another tensor in an add, its channel c is coupled to channel c of every tensor it is summed
with: the group is the set of tensors joined by residual adds and channel-wise steps that map 0 to 0, its
*producers* the Conv/Linear layers whose outputs enter it (a ResNet stage: the stem or downsample conv and
every block's last conv, BatchNorms folded), its *consumers* the Conv/Linear layers that read it (every
block's first conv, a downsample conv, the head after a pool, a spatial mean or a flatten). When channel c is
at zero bits in **every** producer, each tensor of the group is exactly 0 in channel c (a sum of zeros, mapped
0 → 0), so channel c leaves every producer and every consumer's input at once and the output is unchanged. A
producer's zero-bit channel whose partner still has that channel stays masked; the consumers' inputs count in
the size term only while some producer has the channel (``refresh_in_alive_``), so killing a channel in the
last producer pays for the whole group. A group is refused, whole, where any of its tensors goes anywhere else
(a concatenation, a norm over channels, an unfolded BatchNorm, the model's output, a depthwise or grouped
consumer, an input that is no layer's output such as the model's input): the reason is in the manifest.

Torch-Pruning's DepGraph (Fang et al., CVPR 2023) builds the same coupling in general. Evaluated (torch-
pruning 1.6.1 on torch 2.13, the ResNet of tests/sgsc_export/test_pruning.py): on the plain model its
``DependencyGraph`` finds the stage group found here (the stem, every block's last conv and their BatchNorms,
the convs reading them); on the same model with our quantised twins it traces into the quantiser's arithmetic
(a group of 72 nodes for one channel: exp2, clamp and products of b and e), so each twin would need its own
pruner, and its pruners slice by importance, changing the output by design, where we need only the groups that
removal at zero bits leaves unchanged. So the groups here are read from the same torch.fx graph as the chains
above, with the exactness rules of this module. What DepGraph does that this does not: it works from autograd,
so a model fx cannot trace still gets groups (here: none, always safe).

Removal across concatenations, grouped convolutions and norms over channels is still issue 17; every recorded
link and group is exact.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

__all__ = ["NOT_TRACED", "Link", "find_links", "fold_batchnorm_", "is_depthwise", "trace"]


def _linear_output_is_2d(node: fx.Node) -> bool:
    """BatchNorm1d normalises dim 1: after a Linear that is its features only for a ``[N, C]`` output, which
    the shapes propagated from an example show; without them, refuse."""
    meta = node.meta.get("tensor_meta")
    return meta is not None and len(meta.shape) == 2

_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
          nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
_PASS_MODULES = _POOLS + (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)
_ACT_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.ELU, nn.Hardswish, nn.Hardtanh,
                nn.Mish, nn.Sigmoid, nn.Softplus)
_PASS_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.gelu, F.silu, torch.tanh, F.leaky_relu, F.max_pool1d,
                   F.max_pool2d, F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
                   F.dropout}
_PASS_METHODS = {"relu", "tanh"}
_FLATTEN_FUNCTIONS = {torch.flatten}


@dataclass
class Link:
    """Output channel c of ``producer`` is read, through ``through`` (channel-wise modules), by ``consumer``.

    ``per_channel`` is how many consumer input slots one producer channel feeds: 1 for Conv→Conv and
    Linear→Linear, H·W after a flatten.

    ``upstream``: where the producer is a depthwise convolution (each output channel c reads input channel c
    alone), the Conv/Linear whose output channel c is that input, through a chain of its own; removing the
    depthwise channel c removes that channel of ``upstream`` with it (its only reader is gone).

    ``partners`` and ``other_consumers``: a channel group across residual adds and branches (the module
    docstring): channel c leaves ``producer``, every partner and the inputs of every consumer at once, and
    only where it is at zero bits in all the producers.
    """

    producer: str
    consumer: str
    through: list[str] = field(default_factory=list)
    per_channel: int = 1
    upstream: str | None = None
    partners: list[str] = field(default_factory=list)
    other_consumers: list[tuple[str, int]] = field(default_factory=list)

    @property
    def producers(self) -> list[str]:
        """Every layer whose channel c this link's channel c is (a residual group's summands; else one)."""
        return [self.producer, *self.partners]

    @property
    def consumers(self) -> list[tuple[str, int]]:
        """``(consumer, per_channel)`` of every layer that reads the channels."""
        return [(self.consumer, self.per_channel), *self.other_consumers]


class _Tracer(fx.Tracer):
    """Keeps subclasses of the quantisable layers (the quantised twins) as leaves, like torch.nn's own
    modules."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        leaves = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.Embedding, nn.RNNBase, nn.MultiheadAttention)
        return isinstance(m, leaves) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.GraphModule | None:
    """The model's fx graph, or None when it cannot be traced symbolically."""
    try:
        return fx.GraphModule(model, _Tracer().trace(model))
    except Exception:  # noqa: BLE001 - any tracing failure means "no structural knowledge"
        return None


def _zero_preserving(fn) -> bool:
    with torch.no_grad():
        try:
            return bool(torch.all(fn(torch.zeros(1, 2, 4, 4)) == 0))
        except Exception:  # noqa: BLE001
            return False


_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)  # the producers a link starts from


def _is_conv(m: nn.Module) -> bool:
    return isinstance(m, (nn.Conv1d, nn.Conv2d))


def is_depthwise(m: nn.Module) -> bool:
    """A convolution whose output channel c reads input channel c alone (groups = in = out channels)."""
    return _is_conv(m) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


def _called_once(gm: fx.GraphModule) -> set[str]:
    """The modules the traced forward calls exactly once."""
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    return {name for name, n in calls.items() if n == 1}


NOT_TRACED = "the model cannot be traced by torch.fx: no removal at all"


def find_links(model: nn.Module, gm: fx.GraphModule | None = None,
               blocked: dict[str, str] | None = None) -> dict[str, Link]:
    """Producer name → Link for every Conv/Linear whose output channels have one unambiguous consumer.

    ``blocked``, when given, receives for every other Conv/Linear why its zero-bit channels stay masked (the
    manifest's ``layers[].masked_reason``)."""
    blocked = {} if blocked is None else blocked
    gm = gm if gm is not None else trace(model)
    if gm is None:
        blocked.update({n: NOT_TRACED for n, m in model.named_modules() if isinstance(m, _LAYERS)})
        return {}
    modules = dict(model.named_modules())
    once = _called_once(gm)
    shared = {name for name, m in modules.items() if isinstance(m, _LAYERS) and name not in once}
    blocked.update(dict.fromkeys(shared, "called more than once (its weights serve every call)"))
    # a shared module links nothing, except one without parameters or buffers (a ReLU a block calls twice):
    # it holds nothing that removal would slice
    modules = {name: m for name, m in modules.items() if name in once or _stateless(m)}
    links: dict[str, Link] = {}
    feeds: dict[str, str] = {}  # depthwise convolution → the producer whose channels are its inputs
    depthwise: list[fx.Node] = []
    for node in gm.graph.nodes:
        producer = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(producer, _LAYERS):
            continue
        if is_depthwise(producer):
            depthwise.append(node)
            continue
        if _is_conv(producer) and producer.groups != 1:
            blocked[node.target] = "a grouped convolution (each channel reads a group of input channels)"
            continue
        link = _follow(node, node.target, producer, modules)
        if isinstance(link, Link) and is_depthwise(modules[link.consumer]):
            feeds[link.consumer] = node.target
            blocked[node.target] = (f"it feeds the depthwise convolution {link.consumer}: its channels go "
                                    f"only with that convolution's zero-bit channels")
        elif isinstance(link, Link):
            links[node.target] = link
        else:
            blocked[node.target] = link
    _add_groups(gm, modules, links, blocked, feeds)
    for node in depthwise:  # after every producer: the one that feeds each depthwise convolution is known
        upstream = feeds.get(node.target)
        if upstream is None:
            blocked[node.target] = ("a depthwise convolution whose input channels do not come from one "
                                    "Conv/Linear through channel-wise steps (removing one would leave its "
                                    "input in place)")
            continue
        link = _follow(node, node.target, modules[node.target], modules)
        if isinstance(link, Link):
            link.upstream = upstream
            links[node.target] = link
        else:
            blocked[node.target] = link
            blocked[upstream] = (f"it feeds the depthwise convolution {node.target}, whose channels stay "
                                 f"({link})")
    return links


_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_MEAN_FUNCTIONS = {torch.mean}
# the chain's reasons that a channel group across residual adds and branches may lift (``_add_groups``)
_COUPLED = ("its output is read more than once", "its output meets another tensor in a residual add",
            "its output goes through a residual add")


def _tensor_args(node: fx.Node) -> list[fx.Node]:
    return [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, fx.Node)]


def _reads_first_only(node: fx.Node) -> bool:
    """``node`` reads one tensor, its first argument."""
    return bool(node.args) and isinstance(node.args[0], fx.Node) and _tensor_args(node) == [node.args[0]]


def _is_add(node: fx.Node) -> bool:
    """A sum of two tensors, nothing else (no ``alpha``, no constant)."""
    if node.kwargs or len(node.args) != 2 or not all(isinstance(a, fx.Node) for a in node.args):
        return False
    return (node.op == "call_function" and node.target in _ADD_FUNCTIONS
            or node.op == "call_method" and node.target in ("add", "add_"))


def _spatial_mean(node: fx.Node) -> bool:
    """A mean over dimensions 2 and up only (``x.mean((2, 3))``): channel c of the result averages channel c
    of a convolution's output."""
    if not (node.op == "call_method" and node.target == "mean"
            or node.op == "call_function" and node.target in _MEAN_FUNCTIONS) or not _reads_first_only(node):
        return False
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    dims = (dims,) if isinstance(dims, int) else dims
    return (isinstance(dims, (tuple, list)) and len(dims) > 0
            and all(isinstance(d, int) and d >= 2 for d in dims)
            and not set(node.kwargs) - {"dim", "keepdim"} and len(node.args) <= 2)


def _channel_wise(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """A step that maps channel c to channel c and 0 to 0, reading one tensor (its first argument)."""
    if not _reads_first_only(node):
        return False
    if node.op == "call_module":
        m = modules.get(node.target)
        return isinstance(m, _PASS_MODULES) or isinstance(m, _ACT_MODULES) and _zero_preserving(m)
    return (node.op == "call_function" and node.target in _PASS_FUNCTIONS
            or node.op == "call_method" and node.target in _PASS_METHODS)


def _is_flatten(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if not _reads_first_only(node):
        return False
    if node.op == "call_module":
        m = modules.get(node.target)
        return isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1
    return ((node.op == "call_function" and node.target in _FLATTEN_FUNCTIONS
             or node.op == "call_method" and node.target == "flatten")
            and tuple(node.args[1:]) in ((1,), (1, -1)) and not node.kwargs)


def _what(node: fx.Node) -> str:
    """A node, named for a reason line."""
    if node.op == "call_module":
        return f"{node.target} ({type(node.graph.owning_module.get_submodule(node.target)).__name__})"
    return _op_name(node)


def _group(start: fx.Node,
           modules: dict[str, nn.Module]) -> tuple[list[fx.Node], dict[str, int], list[str]] | str:
    """The channel group of ``start``'s output (the module docstring): its producer nodes, its consumers
    (name → per_channel; -1: a flatten's, in_features / channels) and the channel-wise modules on the way; or
    why there is none (one line)."""
    members: dict[fx.Node, None] = {}  # insertion-ordered: the same group, in the same order, every time
    producers: dict[fx.Node, None] = {}
    consumers: dict[str, int] = {}
    through: list[str] = []
    kinds: set[str] = set()  # "conv"/"linear" producers; "spatial"/"last": what a consumer reads as channels
    todo = [start]
    while todo:
        node = todo.pop()
        if node in members:
            continue
        members[node] = None
        m = modules.get(node.target) if node.op == "call_module" else None
        # where this tensor comes from
        if isinstance(m, _LAYERS):
            if _is_conv(m) and m.groups != 1:
                return f"a grouped or depthwise convolution ({node.target}) is summed into its channels"
            producers[node] = None
            kinds.add("conv" if _is_conv(m) else "linear")
        elif _channel_wise(node, modules):
            todo.append(node.args[0])
            if node.op == "call_module":
                through.append(str(node.target))
        elif _is_add(node):
            todo.extend(node.args)
        elif node.op == "placeholder":
            return "the model's input is summed into its channels"
        else:
            return f"its channels are also summed with the output of {_what(node)}"
        # where it goes
        for user in node.users:
            um = modules.get(user.target) if user.op == "call_module" else None
            if user.op == "output":
                return "its channels are the model's outputs"
            if _channel_wise(user, modules) or _is_add(user):
                todo.append(user)
            elif isinstance(um, _LAYERS) and _reads_first_only(user):
                if _is_conv(um) and um.groups != 1:
                    return f"the consumer {user.target} is a grouped or depthwise convolution"
                consumers[str(user.target)] = 1
                kinds.add("spatial" if _is_conv(um) else "last")
            elif _spatial_mean(user) or _is_flatten(user, modules):
                reader = _flat_reader(user, modules)
                if reader.startswith(" "):
                    return reader.strip()
                consumers[reader] = -1 if _is_flatten(user, modules) else 1
                kinds.add("spatial")  # channels at dim 1 of a [N, C, ...] tensor: a convolution's
            elif user.op == "call_module" and um is None:
                return f"the module {user.target} is called more than once"
            else:
                return f"its channels go through {_what(user)}"
    if not (kinds <= {"conv", "spatial"} or kinds <= {"linear", "last"}):
        return "its producers and consumers mix convolutions and Linear layers on one tensor"
    return list(producers), consumers, through


def _flat_reader(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    """The one Linear that reads ``node`` (a flatten or spatial mean of the group) through channel-wise steps,
    or why there is none (with a leading space)."""
    cur = node
    while True:
        users = list(cur.users)
        if len(users) != 1:
            return " a flattened or pooled copy of its channels is read more than once"
        nxt = users[0]
        m = modules.get(nxt.target) if nxt.op == "call_module" else None
        if isinstance(m, nn.Linear) and _reads_first_only(nxt):
            return str(nxt.target)
        if not _channel_wise(nxt, modules):
            return f" its flattened or pooled channels go through {_what(nxt)}"
        cur = nxt


def _add_groups(gm: fx.GraphModule, modules: dict[str, nn.Module], links: dict[str, Link],
                blocked: dict[str, str], feeds: dict[str, str]) -> None:
    """A link per channel group (``_group``) for the producers the chains left blocked for a residual add or a
    second reader; keyed by the group's first producer in graph order."""
    order = {node: i for i, node in enumerate(gm.graph.nodes)}
    done: set[str] = set()
    for node in gm.graph.nodes:
        name = str(node.target) if node.op == "call_module" else None
        if name is None or name in done or not blocked.get(name, "").startswith(_COUPLED):
            continue
        group = _group(node, modules)
        if isinstance(group, str):
            blocked[name] = f"{blocked[name]}; its channel group: {group}"
            continue
        producers, consumers, through = group
        names = [str(p.target) for p in sorted(producers, key=order.__getitem__)]
        done.update(names)
        why = _group_refusal(names, consumers, modules, links, feeds)
        if isinstance(why, str):
            for n in names:
                blocked[n] = f"{blocked.get(n, 'coupled to a residual add')}; its channel group: {why}"
            continue
        (first, per), rest = why[0], why[1:]
        links[names[0]] = Link(names[0], first, through, per, partners=names[1:], other_consumers=rest)
        for n in names:
            blocked.pop(n, None)


def _group_refusal(names: list[str], consumers: dict[str, int], modules: dict[str, nn.Module],
                   links: dict[str, Link], feeds: dict[str, str]) -> list[tuple[str, int]] | str:
    """The group's consumers ``(name, per_channel)`` in name order, or why the group is refused."""
    if any(n in links or n in feeds.values() for n in names):
        return "one of its layers is already linked elsewhere"
    widths = {int(modules[n].weight.shape[0]) for n in names}
    if len(widths) != 1:
        return "its layers disagree on the channel count (a broadcast sum)"
    width = widths.pop()
    readers = []
    for consumer, per in sorted(consumers.items()):
        m = modules[consumer]
        n_in = int(m.in_features if isinstance(m, nn.Linear) else m.in_channels)
        per = n_in // width if per == -1 else per
        if n_in != width * per:
            return f"the consumer {consumer} does not read its channels whole"
        readers.append((consumer, per))
    return readers


def _stateless(m: nn.Module) -> bool:
    return (isinstance(m, _PASS_MODULES + _ACT_MODULES) and next(m.parameters(), None) is None
            and next(m.buffers(), None) is None)


def _op_name(node: fx.Node) -> str:
    target = node.target
    name = target if isinstance(target, str) else getattr(target, "__name__", str(target))
    return {"add": "a residual add", "iadd": "a residual add", "cat": "a concatenation",
            "concat": "a concatenation", "mul": "a product"}.get(
        name, f"{name}, which is not channel-wise")


def _follow(node: fx.Node, name: str, producer: nn.Module, modules: dict[str, nn.Module]) -> Link | str:
    """The link from ``node``, or why there is none (one line)."""
    through: list[str] = []
    flattened = False
    cur = node
    while True:
        users = list(cur.users)
        if len(users) != 1:
            return ("its output is read more than once (a residual branch)" if users
                    else "its output is unused")
        nxt = users[0]
        if nxt.op == "output":
            return "its channels are the model's outputs"
        if nxt.args[:1] != (cur,) or any(a is cur for a in list(nxt.args[1:]) + list(nxt.kwargs.values())):
            return f"its output meets another tensor in {_op_name(nxt)}"  # the first and only tensor argument
        if nxt.op == "call_module":
            m = modules.get(nxt.target)
            if m is None:
                return f"the next module ({nxt.target}) is called more than once"
            if isinstance(m, (nn.Conv1d, nn.Conv2d)) and not flattened and _is_conv(producer):
                if m.groups != 1 and not (is_depthwise(m) and m.in_channels == producer.out_channels):
                    return f"the consumer {nxt.target} is a grouped convolution"
                return Link(name, nxt.target, through, 1)  # a depthwise one: ``find_links`` makes it a feed
            if isinstance(m, nn.Linear) and (flattened or isinstance(producer, nn.Linear)):
                n_out = producer.weight.shape[0]
                if m.in_features % n_out:
                    return f"the consumer {nxt.target}'s inputs do not split evenly over its channels"
                return Link(name, nxt.target, through, m.in_features // n_out)
            if isinstance(m, _PASS_MODULES):
                pass
            elif isinstance(m, _ACT_MODULES):
                if not _zero_preserving(m):
                    return f"{type(m).__name__} ({nxt.target}) does not map 0 to 0"
            elif (isinstance(m, nn.Flatten) and _is_conv(producer) and not flattened
                  and m.start_dim == 1 and m.end_dim == -1):
                flattened = True
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                return f"a BatchNorm not folded into it ({nxt.target}) maps a dead channel's 0 to β − μ·γ/σ"
            elif isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
                return f"a {type(m).__name__} over its channels ({nxt.target}) mixes them"
            else:
                return f"the next module ({nxt.target}, {type(m).__name__}) is not channel-wise"
        elif (nxt.op == "call_function" and nxt.target in _PASS_FUNCTIONS
              or nxt.op == "call_method" and nxt.target in _PASS_METHODS):
            pass
        elif ((nxt.op == "call_function" and nxt.target in _FLATTEN_FUNCTIONS
               or nxt.op == "call_method" and nxt.target == "flatten")
              and _is_conv(producer) and not flattened and tuple(nxt.args[1:]) in ((1,), (1, -1))
              and not nxt.kwargs):
            flattened = True
        else:
            return f"its output goes through {_op_name(nxt)}"
        cur = nxt


def fold_batchnorm_(model: nn.Module, gm: fx.GraphModule | None = None,
                    example: torch.Tensor | None = None) -> list[tuple[str, str]]:
    """Fold every BatchNorm that directly and solely follows a Conv (or a Linear, BatchNorm1d on its
    ``[N, C]`` output, seen by running ``example``) into it, in place; both must be called once (a shared
    layer keeps its BatchNorm).

    The BatchNorm becomes ``nn.Identity``; the model must be in eval mode semantics (running statistics are
    used). Returns the (conv, batchnorm) name pairs that were folded.
    """
    gm = gm if gm is not None else trace(model)
    if gm is None:
        return []
    once = _called_once(gm)
    modules = {name: m for name, m in model.named_modules() if name in once}
    if example is not None:
        try:
            with torch.no_grad():
                ShapeProp(gm).propagate(example)
        except Exception:  # noqa: BLE001 - no shapes: a Linear keeps its BatchNorm1d
            pass
    folded: list[tuple[str, str]] = []
    for node in gm.graph.nodes:
        conv = modules.get(node.target) if node.op == "call_module" else None
        if not (_is_conv(conv) or isinstance(conv, nn.Linear)):
            continue
        users = list(node.users)
        if len(users) != 1 or users[0].op != "call_module" or users[0].args[:1] != (node,):
            continue
        bn = modules.get(users[0].target)
        n_out = conv.weight.shape[0]
        kinds = (nn.BatchNorm1d, nn.BatchNorm2d) if _is_conv(conv) else (nn.BatchNorm1d,)
        if not isinstance(bn, kinds) or bn.num_features != n_out:
            continue
        if isinstance(conv, nn.Linear) and not _linear_output_is_2d(node):
            continue
        if not bn.track_running_stats or bn.running_var is None:
            continue
        with torch.no_grad():
            std = torch.sqrt(bn.running_var + bn.eps)
            gamma = bn.weight if bn.affine else torch.ones_like(std)
            beta = bn.bias if bn.affine else torch.zeros_like(std)
            k = gamma / std
            conv.weight.mul_(k.reshape((-1,) + (1,) * (conv.weight.dim() - 1)))
            b0 = conv.bias if conv.bias is not None else torch.zeros_like(std)
            new_bias = (b0 - bn.running_mean) * k + beta
            conv.bias = nn.Parameter(new_bias.clone())
        parent, _, child = users[0].target.rpartition(".")
        setattr(model.get_submodule(parent), child, nn.Identity())
        folded.append((node.target, users[0].target))
    return folded


