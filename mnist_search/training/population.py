"""Trials of any shapes training side by side on one batch order, joining as others end.

A Population holds groups: one Stack per set of members that joined at the same epoch with
the same stack key. Each epoch draws one permutation from the population's own order
stream and every group trains a full epoch on it. A group's arithmetic is exactly that of
training it alone on that order, so each member records (order_seed, order_skip) in its
config and re-runs alone bit for bit (train_population skips the same epochs of the same
stream). Members end at epoch boundaries (finished, stopped by the callback, diverged or
out of time) and new ones join at the next, which is how a worker keeps its slots full and
tells each result, and asks the sampler again, as soon as a trial ends.

On a CPU, groups train one after another. Measured on 2 cores, fusing the first layers of
different shapes into one GEMM gains at most 1.13x on that layer (0.98x for two 512-unit
members), while each member's weights would then depend on its neighbours' rounding. On
a GPU (SGD, constant lr), one CUDA graph holds every group's step, each on its own stream,
so the small kernels of different shapes run side by side (graphs.GraphedGroups).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import torch

from ..config import TrainConfig
from ..data import Data, epoch_order
from ..errors import NonFiniteLossError, is_out_of_memory
from .engine import Stack, matmul_precision
from .epochs import (
    EpochReport,
    OutOfTime,
    StopTraining,
    TrainResult,
    epoch_reports,
    member_result,
    order_stream,
    pixel_order,
    reports_of,
)
from .graphs import GraphedGroups, GraphFailed, graphable, train_eagerly
from .pixels import PixelOrder

__all__ = ["BUCKET_MEMBERS", "BUCKET_STEP", "Outcome", "Population", "buckets", "data_key"]

K = TypeVar("K", bound=Hashable)
BUCKET_STEP = 16  # a bucket's widths are multiples of this (the search's narrowest layer)
# Members per bucket, about: a depth's members are split into quantiles of their widths of
# about this many. 256 search-like shapes padded to each depth's widest computed 4.95x
# their own FLOPs in 4 stacks; in quantiles of 16, 2.45x in 18 (bench/bench_mixed.py
# --flops-only). Up to 16 of a depth, buckets are as before: one per depth.
BUCKET_MEMBERS = 16
Outcome = TrainResult | BaseException


def buckets(configs: Sequence[TrainConfig], step: int = BUCKET_STEP,
            members: int = BUCKET_MEMBERS) -> list[TrainConfig]:
    """The configs, those that differ from others only in their widths padded to a bucket.

    Per depth (and stack kind), members are ranked by their widths (the first layer's, which
    holds most FLOPs, then the next) and split into quantiles of about `members` each, so a
    bucket holds similar widths instead of padding every member to the depth's widest; each
    layer of a bucket is as wide as its widest member's, rounded up to `step`. A config
    alone in its bucket is left as it is.
    """
    groups: dict[tuple[object, ...], list[int]] = {}
    for i, c in enumerate(configs):
        kind = dataclasses.replace(c, hidden=(1,) * len(c.hidden), pad_hidden=None)
        groups.setdefault(kind.stack_key(), []).append(i)
    out = list(configs)
    for idx in groups.values():
        ranked = sorted(idx, key=lambda i: (configs[i].hidden, i))
        parts = math.ceil(len(ranked) / members)
        for part in range(parts):
            bucket = ranked[len(ranked) * part // parts:len(ranked) * (part + 1) // parts]
            if len({configs[i].hidden for i in bucket}) < 2:
                continue
            pad = tuple(-(-max(configs[i].hidden[j] for i in bucket) // step) * step
                        for j in range(len(configs[bucket[0]].hidden)))
            for i in bucket:
                out[i] = dataclasses.replace(configs[i], pad_hidden=pad)
    return out


def data_key(config: TrainConfig) -> tuple[object, ...]:
    """What members of one population share: batch size, data, device and matmul precision
    (side by side, its groups run in one CUDA graph, under one precision)."""
    return (config.batch_size, config.dataset, config.val_size, config.normalize, config.device,
            config.matmul_precision)


@dataclass
class _Group(Generic[K]):
    stack: Stack
    keys: list[K]  # the caller's key of each member, by its index in the stack
    configs: list[TrainConfig]
    epochs_done: int = 0
    seconds: float = 0.0  # wall time of this group's epochs so far
    history: list[list[EpochReport]] = field(default_factory=list)
    # Its own batch orders, if not the population's: each member's (order seed, epochs
    # skipped), and one stream per distinct pair. Members that share a pair share the very
    # same permutation object each epoch, which lets the stack gather each batch once.
    orders: list[tuple[int, int]] = field(default_factory=list)
    gens: dict[tuple[int, int], torch.Generator] = field(default_factory=dict)

    def perms(self, n: int) -> list[torch.Tensor]:
        """This epoch's order of each member (by its index in the stack)."""
        drawn = {key: epoch_order(n, gen) for key, gen in self.gens.items()}
        return [drawn[key] for key in self.orders]


class Population(Generic[K]):
    """Members keyed by the caller (a trial number, say) that share data, batch size and
    device, trained over the batch order of `order_seed`.

    With order_seed None, each group keeps the batch orders it would have alone (a stack
    of several trials shares its first member's seed, recorded in each config): results
    then do not depend on which trials happen to share a worker, but groups cannot share
    one graph on a GPU. train_population is such a population of one group.
    """

    def __init__(self, data: Data, device: str, order_seed: int | None, *,
                 bucket: bool = False, concurrent: bool = True, use_graphs: bool = True
                 ) -> None:
        self.data, self.device, self.order_seed = data, device, order_seed
        self.bucket = bucket  # members that join together stack across widths (buckets)
        # On a GPU: groups side by side in one graph, and steps replayed as CUDA graphs (the
        # benchmarks switch these off to time groups one after another, or eager steps).
        self.concurrent, self.use_graphs = concurrent, use_graphs
        self.gen = None if order_seed is None else \
            torch.Generator(device="cpu").manual_seed(order_seed)  # orders: the CPU's stream
        self.epoch = 0  # epochs of the order drawn so far
        self.groups: list[_Group[K]] = []
        self.data_key: tuple[object, ...] | None = None
        self.pixels: PixelOrder | None = None
        self._graph: GraphedGroups | None = None
        self._graph_key: tuple[tuple[int, int], ...] = ()

    def __len__(self) -> int:
        return sum(len(g.stack.members) for g in self.groups)

    def stack_of(self, key: K) -> list[K]:
        """The members `key` trains stacked with (itself included), as they joined."""
        for group in self.groups:
            if key in group.keys:
                return list(group.keys)
        raise KeyError(key)

    def fits(self, config: TrainConfig) -> bool:
        """Whether `config` can join: same data, batch size and device as the members."""
        return self.data_key is None or data_key(config) == self.data_key

    def add(self, members: Sequence[tuple[K, TrainConfig]], *, as_given: bool = False
            ) -> list[TrainConfig]:
        """Members join at the next epoch; returns their configs as trained (with the
        order seed and the epochs of it already drawn), the ones to record.

        `as_given` keeps each config's own batch order even when it stacks with others
        (train_population); otherwise a stack shares its first member's order.
        """
        if not members:
            return []
        joined = [c if self.order_seed is None else
                  dataclasses.replace(c, order_seed=self.order_seed, order_skip=self.epoch)
                  for _, c in members]
        if not all(self.fits(c) and data_key(c) == data_key(joined[0]) for c in joined):
            raise ValueError("population members need one batch size, data and device")
        if self.bucket:
            joined = buckets(joined)
        if self.data_key is None:
            self.data_key = data_key(joined[0])
            self.pixels = pixel_order(self.data, self.device, joined[0].batch_size)
        by_shape: dict[tuple[object, ...], list[int]] = {}
        for i, c in enumerate(joined):
            by_shape.setdefault(c.stack_key(), []).append(i)
        for idx in by_shape.values():
            if self.order_seed is None and not as_given and len(idx) > 1:
                # a member whose order is pinned (a queued trial's) keeps it, so its result
                # does not depend on which trials it stacks with; the rest share the first
                # unpinned member's order
                free = [i for i in idx if joined[i].order_seed is None]
                for i in free:
                    joined[i] = dataclasses.replace(joined[i], order_seed=joined[free[0]].seed)
            self.groups.append(self._group([members[i][0] for i in idx],
                                           [joined[i] for i in idx]))
        return joined

    def _group(self, keys: list[K], configs: list[TrainConfig]) -> _Group[K]:
        n = len(self.data.train)
        steps = configs[0].epochs * math.ceil(n / configs[0].batch_size)
        group = _Group(Stack(configs, self.device, steps, self.pixels,
                             use_graphs=self.use_graphs), keys, configs,
                       history=[[] for _ in keys])
        if self.order_seed is None:
            group.orders = [(c.seed if c.order_seed is None else c.order_seed, c.order_skip)
                            for c in configs]
            group.gens = {key: order_stream(key[0], key[1], n)
                          for key in dict.fromkeys(group.orders)}
        return group

    def run_epoch(self, on_epoch: Callable[[K, EpochReport], None] | None = None, *,
                  deadline: float | None = None,
                  between_batches: Callable[[], None] | None = None,
                  ) -> list[tuple[K, Outcome]]:
        """One epoch of every member; returns the members that ended with it and how."""
        n = len(self.data.train)
        perm = None if self.gen is None else epoch_order(n, self.gen)
        self.epoch += 1
        ended: list[tuple[K, Outcome]] = []
        if perm is not None and self.side_by_side:
            start = time.perf_counter()
            losses = self._concurrent_epoch(perm, between_batches)
            seconds = time.perf_counter() - start
            for group, (loss_sum, last) in zip(self.groups, losses, strict=True):
                group.epochs_done += 1
                group.seconds += seconds
                reports = reports_of(group.stack, self.data, loss_sum, last,
                                     group.configs[0].batch_size, group.epochs_done)
                ended += self._settle(group, reports, on_epoch, deadline)
        else:
            for group in self.groups:
                start = time.perf_counter()
                group.epochs_done += 1
                perms = group.perms(n) if perm is None else [perm] * len(group.keys)
                try:
                    reports = epoch_reports(group.stack, self.data, perms,
                                            group.configs[0].batch_size, group.epochs_done,
                                            between_batches)
                except (MemoryError, RuntimeError) as exc:
                    if not is_out_of_memory(exc):
                        raise
                    ended += self._abandon(group, exc)  # this stack alone: the rest go on
                    continue
                group.seconds += time.perf_counter() - start
                ended += self._settle(group, reports, on_epoch, deadline)
        self.groups = [g for g in self.groups if g.stack.members]
        return ended

    @property
    def side_by_side(self) -> bool:
        """Whether the groups train side by side in one CUDA graph (several shapes, on a
        GPU, one shared batch order), rather than one after another."""
        return len(self.groups) > 1 and self.concurrent and self.gen is not None and \
            all(graphable(g.stack) for g in self.groups)

    def _concurrent_epoch(self, perm: torch.Tensor, between_batches: Callable[[], None] | None
                          ) -> list[tuple[list[float], list[float]]]:
        """One epoch of every group through GraphedGroups; (loss sums, last losses) each."""
        stacks = [g.stack for g in self.groups]
        with matmul_precision(stacks[0].tf32):  # one graph: one precision (a stack key)
            return self._graph_epoch(stacks, perm, between_batches)

    def _graph_epoch(self, stacks: list[Stack], perm: torch.Tensor,
                     between_batches: Callable[[], None] | None
                     ) -> list[tuple[list[float], list[float]]]:
        batch = self.groups[0].configs[0].batch_size
        train = self.data.train
        key = tuple((id(s), s.generation) for s in stacks)
        order = perm.to(self.device)
        full, failed = 0, False
        try:
            if self._graph is None or self._graph_key != key:
                self._graph, self._graph_key = None, ()
                self._graph = GraphedGroups(stacks, train.x, train.y, batch)
                self._graph_key = key
            full = self._graph.run(order, between_batches)
        except GraphFailed as exc:  # these stacks train eagerly from here on
            train_eagerly(stacks, exc)
            full, failed = exc.done, True
        if self._graph is not None:  # what the replays summed, up to a failure
            sums = [t.clone() for t in self._graph.loss_sums]
            lasts = [t.clone() for t in self._graph.lasts]
        else:
            sums = [torch.zeros(len(s.members), device=self.device) for s in stacks]
            lasts = [t.clone() for t in sums]
        if failed:
            self._graph, self._graph_key = None, ()
        for i in range(full, len(order), batch):  # the short last batch (or, after a
            idx = order[i:i + batch]  # failure, the rest of the epoch), eagerly
            x, y = train.x.index_select(0, idx), train.y.index_select(0, idx)
            for k, stack in enumerate(stacks):
                lasts[k] = stack.step(x, y.expand(len(stack.members), -1))
                sums[k] += lasts[k]
            if between_batches is not None and len(idx) == batch:
                between_batches()
        return [(s.tolist(), last.tolist()) for s, last in zip(sums, lasts, strict=True)]

    def _abandon(self, group: _Group[K], exc: BaseException) -> list[tuple[K, Outcome]]:
        """End every member of a group whose epoch could not be allocated, with `exc`."""
        members = list(group.stack.members)
        group.stack.members = []  # its buffers go with the group
        return [(group.keys[m], exc) for m in members]

    def _settle(self, group: _Group[K], reports: dict[int, EpochReport],
                on_epoch: Callable[[K, EpochReport], None] | None, deadline: float | None,
                ) -> list[tuple[K, Outcome]]:
        """Record the group's reports; end (and drop) the members whose run is over."""
        stack, c0 = group.stack, group.configs[0]
        outcomes: dict[int, Outcome] = {}
        for member, rep in reports.items():
            group.history[member].append(rep)
            try:
                if not math.isfinite(rep.train_loss):
                    raise NonFiniteLossError(group.epochs_done, rep.train_loss)
                if on_epoch is not None:
                    on_epoch(group.keys[member], rep)
            except (NonFiniteLossError, StopTraining) as exc:
                outcomes[member] = exc
        last = group.epochs_done >= c0.epochs
        for pos, member in enumerate(stack.members):
            if member in outcomes:
                continue
            if last:
                outcomes[member] = member_result(stack, pos, group.configs[member],
                                                 group.history[member], group.seconds,
                                                 self.data, len(group.keys))
            elif deadline is not None and time.time() >= deadline:
                outcomes[member] = OutOfTime(group.epochs_done)
        stack.drop(list(outcomes))
        return [(group.keys[m], outcome) for m, outcome in outcomes.items()]
