"""Pruning for real: zero-bit channels leave the tensors, with the consumer's matching inputs.

A zero-bit channel outputs exactly 0 (its bias is masked, see :mod:`sgsc_export.method.nn`), and every step on
the link between producer and consumer maps 0 to 0, so removing the channel and the consumer's inputs that
read it leaves the network's output unchanged (``sgsc_export.method.graph`` records only such links: a
BatchNorm on the way, which would map 0 elsewhere, is folded into the producer or breaks the link). A
depthwise producer's channel takes its input channel with it, and the upstream producer's channel that was
that input (``Link.upstream``: nothing else reads it). A channel group across residual adds and branches
(``Link.partners``, ``Link.other_consumers``) loses channel c only where it is at zero bits in every producer:
then every tensor of the group is 0 in channel c. Channels without such a consumer stay in place as masked
zero-bit channels.
"""

from __future__ import annotations

import torch
from torch import nn

from sgsc_export.method.graph import Link
from sgsc_export.method.heads import refresh_head_in_alive_
from sgsc_export.method.nn import is_quantized, quantized_layers

__all__ = ["refresh_in_alive_", "remove_dead_channels_", "revive_", "slice_like", "Plan"]


def slice_like(t: torch.Tensor, slicings: list[tuple[int, torch.Tensor]]) -> torch.Tensor:
    """Apply a tensor's slicings from a removal plan to another tensor of the same shape (optimiser state)."""
    for dim, index in slicings:
        t = t.index_select(dim, index)
    return t.clone()


def _alive(m: nn.Module) -> torch.Tensor:
    if is_quantized(m):
        return m.channel_alive()
    return torch.ones(m.weight.shape[0], dtype=torch.bool, device=m.weight.device)


def refresh_in_alive_(model: nn.Module, links: dict[str, Link]) -> None:
    """Mark, in each consumer's ``in_alive``, the input slots that read a live producer channel (attention
    output projections included, see :mod:`sgsc_export.method.heads`)."""
    for link in links.values():
        alive = _group_alive(model, link)  # a channel group's: alive in any of its producers
        for name, per_channel in link.consumers:
            consumer = model.get_submodule(name)
            if is_quantized(consumer):
                consumer.in_alive.copy_(alive.to(consumer.in_alive.dtype).repeat_interleave(per_channel))
    refresh_head_in_alive_(model)


def _group_alive(model: nn.Module, link: Link, only: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Channel c is alive while any producer of the link has it (``only``: removable channels per layer)."""
    alive = None
    for name in link.producers:
        a = _alive(model.get_submodule(name))
        if only is not None:
            a = a | ~only.get(name, torch.zeros_like(a))
        alive = a if alive is None else alive | a
    return alive


Plan = dict[str, list[tuple[int, torch.Tensor]]]  # qualified tensor name → [(dim, kept indices), ...]


def _slice_param(module: nn.Module, name: str, index: torch.Tensor, dim: int, plan: Plan | None = None,
                 prefix: str = "") -> None:
    t = getattr(module, name, None)
    if t is None:
        return
    if plan is not None:
        key = f"{prefix}.{name}" if prefix else name
        plan.setdefault(key, []).append((dim, index))  # a layer can be sliced as producer and as consumer
    new = t.detach().index_select(dim, index).clone()
    if isinstance(t, nn.Parameter):
        setattr(module, name, nn.Parameter(new, requires_grad=t.requires_grad))
    else:
        module.register_buffer(name, new)


def _slice_outputs(layer: nn.Module, name: str, keep: torch.Tensor, plan: Plan | None) -> None:
    """Keep only output channels ``keep`` of a Conv/Linear (and their b, e)."""
    for p in ("weight", "bias", "b", "e"):
        _slice_param(layer, p, keep, 0, plan, name)
    if isinstance(layer, nn.Linear):
        layer.out_features = len(keep)
    else:
        layer.out_channels = len(keep)


@torch.no_grad()
def remove_dead_channels_(model: nn.Module, links: dict[str, Link],
                          only: dict[str, torch.Tensor] | None = None,
                          plan: Plan | None = None) -> dict[str, int]:
    """Physically remove zero-bit channels that have an unambiguous consumer. Returns name → channels
    removed.

    ``only`` restricts removal to the given channels of each producer (bool masks; default: every zero-bit
    channel). ``plan``, when given, receives the slicing of every tensor touched, so that optimiser state can
    be sliced the same way.
    """
    removed: dict[str, int] = {}
    for name, link in links.items():
        alive = _group_alive(model, link, only)
        if bool(alive.all()) or not bool(alive.any()):
            continue  # nothing to remove, or removing everything would leave an empty tensor
        keep = torch.nonzero(alive).reshape(-1)
        for producer_name in link.producers:  # a channel group: every summand loses the channel
            _slice_outputs(model.get_submodule(producer_name), producer_name, keep, plan)
            removed[producer_name] = int((~alive).sum())
        if link.upstream is not None:  # a depthwise producer: its input channels go with its outputs
            producer = model.get_submodule(name)
            _slice_param(producer, "in_alive", keep, 0)
            producer.in_channels = producer.groups = len(keep)
            _slice_outputs(model.get_submodule(link.upstream), link.upstream, keep, plan)
        for consumer_name, per_channel in link.consumers:
            consumer = model.get_submodule(consumer_name)
            within = torch.arange(per_channel, device=keep.device)
            cols = (keep[:, None] * per_channel + within).reshape(-1)
            _slice_param(consumer, "weight", cols, 1, plan, consumer_name)
            if is_quantized(consumer):
                _slice_param(consumer, "in_alive", cols, 0)
            if isinstance(consumer, nn.Linear):
                consumer.in_features = len(cols)
            else:
                consumer.in_channels = len(cols)
    return removed


@torch.no_grad()
def revive_(model: nn.Module, names: list[str], fraction: float, bits: float,
            generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Give ``fraction`` (at least one) of the zero-bit channels of each named layer ``bits`` bits again.

    Writes into the parameters' data under ``no_grad`` (never into a leaf autograd tracks). Returns
    name → indices of the revived channels.
    """
    revived: dict[str, torch.Tensor] = {}
    layers = quantized_layers(model)
    for name in names:
        layer = layers[name]
        dead = torch.nonzero(~layer.channel_alive()).reshape(-1)
        if len(dead) == 0:
            continue
        n = max(1, round(len(dead) * fraction))
        pick = dead[torch.randperm(len(dead), generator=generator)[:n]]
        layer.b.view(-1)[pick] = bits
        revived[name] = pick
    return revived
