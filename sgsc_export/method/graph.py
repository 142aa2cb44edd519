"""What follows what in a model: BatchNorm folding and the producer → consumer links that pruning needs.

Both read the model's dataflow from ``torch.fx.symbolic_trace``. A link is only recorded where the consumer of
a layer's output channels is unambiguous: a single chain of channel-wise steps (BatchNorm, an activation with
act(0) = 0, pooling, dropout, one flatten) ending in one Conv (groups = 1) or Linear. Anything else — residual
adds, concatenations, reshapes, a value used twice — breaks the chain, and the producer's zero-bit channels
are kept as masked channels instead of removed. A model that fx cannot trace gets no links at all (said in the
manifest), which is always safe.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

__all__ = ["Link", "find_links", "fold_batchnorm_", "trace"]

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
    """

    producer: str
    consumer: str
    through: list[str] = field(default_factory=list)
    per_channel: int = 1


class _Tracer(fx.Tracer):
    """Keeps Conv/Linear/Embedding subclasses (the quantised twins) as leaves, like torch.nn's own modules."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear, nn.Embedding))
                or super().is_leaf_module(m, qualname))


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


def _is_conv(m: nn.Module) -> bool:
    return isinstance(m, (nn.Conv1d, nn.Conv2d))


def find_links(model: nn.Module, gm: fx.GraphModule | None = None) -> dict[str, Link]:
    """Producer name → Link for every Conv/Linear whose output channels have one unambiguous consumer."""
    gm = gm if gm is not None else trace(model)
    if gm is None:
        return {}
    modules = dict(model.named_modules())
    links: dict[str, Link] = {}
    for node in gm.graph.nodes:
        producer = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(producer, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            continue
        if _is_conv(producer) and producer.groups != 1:
            continue
        link = _follow(node, node.target, producer, modules)
        if link is not None:
            links[node.target] = link
    return links


def _follow(node: fx.Node, name: str, producer: nn.Module, modules: dict[str, nn.Module]) -> Link | None:
    through: list[str] = []
    flattened = False
    cur = node
    while True:
        users = list(cur.users)
        if len(users) != 1:
            return None
        nxt = users[0]
        if nxt.args[:1] != (cur,) or any(a is cur for a in list(nxt.args[1:]) + list(nxt.kwargs.values())):
            return None  # the value must be the first and only tensor argument
        if nxt.op == "call_module":
            m = modules.get(nxt.target)
            if isinstance(m, (nn.Conv1d, nn.Conv2d)) and not flattened and _is_conv(producer):
                if m.groups != 1:
                    return None
                return Link(name, nxt.target, through, 1)
            if isinstance(m, nn.Linear) and (flattened or isinstance(producer, nn.Linear)):
                n_out = producer.weight.shape[0]
                if m.in_features % n_out:
                    return None
                return Link(name, nxt.target, through, m.in_features // n_out)
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and not flattened:
                through.append(nxt.target)
            elif isinstance(m, _PASS_MODULES):
                pass
            elif isinstance(m, _ACT_MODULES):
                if not _zero_preserving(m):
                    return None
            elif (isinstance(m, nn.Flatten) and _is_conv(producer) and not flattened
                  and m.start_dim == 1 and m.end_dim == -1):
                flattened = True
            else:
                return None
        elif (nxt.op == "call_function" and nxt.target in _PASS_FUNCTIONS
              or nxt.op == "call_method" and nxt.target in _PASS_METHODS):
            pass
        elif ((nxt.op == "call_function" and nxt.target in _FLATTEN_FUNCTIONS
               or nxt.op == "call_method" and nxt.target == "flatten")
              and _is_conv(producer) and not flattened and tuple(nxt.args[1:]) in ((1,), (1, -1))
              and not nxt.kwargs):
            flattened = True
        else:
            return None
        cur = nxt


def fold_batchnorm_(model: nn.Module, gm: fx.GraphModule | None = None) -> list[tuple[str, str]]:
    """Fold every BatchNorm that directly and solely follows a Conv into that Conv, in place.

    The BatchNorm becomes ``nn.Identity``; the model must be in eval mode semantics (running statistics are
    used). Returns the (conv, batchnorm) name pairs that were folded.
    """
    gm = gm if gm is not None else trace(model)
    if gm is None:
        return []
    modules = dict(model.named_modules())
    folded: list[tuple[str, str]] = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not _is_conv(modules.get(node.target)):
            continue
        users = list(node.users)
        if len(users) != 1 or users[0].op != "call_module":
            continue
        bn = modules.get(users[0].target)
        conv = modules[node.target]
        if not isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)) or bn.num_features != conv.out_channels:
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


