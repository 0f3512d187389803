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
from ..errors import NonFiniteLossError
from .engine import Stack
from .graphs import GraphedGroups, graphable
from .pixels import PixelOrder
from .train import (
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

__all__ = ["Population"]

K = TypeVar("K", bound=Hashable)
CONCURRENT_GROUPS = True  # benchmarks switch it off to time groups one after another
Outcome = TrainResult | BaseException


def _data_key(config: TrainConfig) -> tuple[object, ...]:
    return (config.batch_size, config.dataset, config.val_size, config.normalize, config.device)


@dataclass
class _Group(Generic[K]):
    stack: Stack
    keys: list[K]  # the caller's key of each member, by its index in the stack
    configs: list[TrainConfig]
    epochs_done: int = 0
    seconds: float = 0.0  # wall time of this group's epochs so far
    history: list[list[EpochReport]] = field(default_factory=list)
    gen: torch.Generator | None = None  # its own batch order, if not the population's


class Population(Generic[K]):
    """Members keyed by the caller (a trial number, say) that share data, batch size and
    device, trained over the batch order of `order_seed`.

    With order_seed None, each group keeps the batch order it would have alone (its first
    member's seed, as train_population orders a stack): results then do not depend on
    which trials happen to share a worker, but groups cannot share one graph on a GPU.
    """

    def __init__(self, data: Data, device: str, order_seed: int | None) -> None:
        self.data, self.device, self.order_seed = data, device, order_seed
        self.gen = None if order_seed is None else torch.Generator().manual_seed(order_seed)
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
        return self.data_key is None or _data_key(config) == self.data_key

    def add(self, members: Sequence[tuple[K, TrainConfig]]) -> list[TrainConfig]:
        """Members join at the next epoch; returns their configs as trained (with the
        order seed and the epochs of it already drawn), the ones to record."""
        if not members:
            return []
        joined = [c if self.order_seed is None else
                  dataclasses.replace(c, order_seed=self.order_seed, order_skip=self.epoch)
                  for _, c in members]
        if not all(self.fits(c) and _data_key(c) == _data_key(joined[0]) for c in joined):
            raise ValueError("population members need one batch size, data and device")
        if self.data_key is None:
            self.data_key = _data_key(joined[0])
            self.pixels = pixel_order(self.data, self.device, joined[0].batch_size)
        by_shape: dict[tuple[object, ...], list[int]] = {}
        for i, c in enumerate(joined):
            by_shape.setdefault(c.stack_key(), []).append(i)
        for idx in by_shape.values():
            if self.order_seed is None and len(idx) > 1:  # a stack shares its first's order
                for i in idx:
                    joined[i] = dataclasses.replace(joined[i], order_seed=joined[idx[0]].seed)
            configs = [joined[i] for i in idx]
            steps = configs[0].epochs * math.ceil(len(self.data.train) / configs[0].batch_size)
            stack = Stack(configs, self.device, steps, self.pixels)
            lead = configs[0]
            gen = None if self.order_seed is not None else order_stream(
                lead.seed if lead.order_seed is None else lead.order_seed, lead.order_skip,
                len(self.data.train))
            self.groups.append(_Group(stack, [members[i][0] for i in idx], configs,
                                      history=[[] for _ in idx], gen=gen))
        return joined

    def run_epoch(self, on_epoch: Callable[[K, EpochReport], None] | None = None, *,
                  deadline: float | None = None,
                  between_batches: Callable[[], None] | None = None,
                  ) -> list[tuple[K, Outcome]]:
        """One epoch of every member; returns the members that ended with it and how."""
        n = len(self.data.train)
        perm = None if self.gen is None else epoch_order(n, self.gen)
        self.epoch += 1
        ended: list[tuple[K, Outcome]] = []
        if perm is not None and self._concurrent():
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
                order = epoch_order(n, group.gen) if group.gen is not None else perm
                assert order is not None  # a group has its own order or the population's
                reports = epoch_reports(group.stack, self.data, [order] * len(group.keys),
                                        group.configs[0].batch_size, group.epochs_done,
                                        between_batches)
                group.seconds += time.perf_counter() - start
                ended += self._settle(group, reports, on_epoch, deadline)
        self.groups = [g for g in self.groups if g.stack.members]
        return ended

    def _concurrent(self) -> bool:
        """On a GPU, groups of several shapes train side by side in one CUDA graph."""
        return len(self.groups) > 1 and CONCURRENT_GROUPS and \
            all(graphable(g.stack) for g in self.groups)

    def _concurrent_epoch(self, perm: torch.Tensor, between_batches: Callable[[], None] | None
                          ) -> list[tuple[list[float], list[float]]]:
        """One epoch of every group through GraphedGroups; (loss sums, last losses) each."""
        stacks = [g.stack for g in self.groups]
        batch = self.groups[0].configs[0].batch_size
        train = self.data.train
        key = tuple((id(s), s.layout) for s in stacks)
        if self._graph is None or self._graph_key != key:
            self._graph, self._graph_key = GraphedGroups(stacks, train.x, train.y, batch), key
        graph = self._graph
        graph.start_epoch()
        order = perm.to(self.device)
        full = len(order) // batch * batch
        for i in range(0, full, batch):
            graph(order[i:i + batch])
            if between_batches is not None:
                between_batches()
        sums, lasts = [t.clone() for t in graph.loss_sums], [t.clone() for t in graph.lasts]
        if full < len(order):  # the short last batch, eagerly
            idx = order[full:]
            x, y = train.x.index_select(0, idx), train.y.index_select(0, idx)
            for k, stack in enumerate(stacks):
                lasts[k] = stack.step(x, y.expand(len(stack.members), -1))
                sums[k] += lasts[k]
        return [(s.tolist(), last.tolist()) for s, last in zip(sums, lasts, strict=True)]

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
