"""CUDA graphs for the training step: one step captured, then replayed for every full batch.

A stack's step is some 40 small kernels; on a GPU a small population spends most of its
time launching them (one baseline model: 0.82 s per epoch eager, 0.09 s replayed on an
H100, with bit-identical weights). The captured step gathers its batch from a static index
buffer, and reads dropout masks from static buffers that each member's own generator fills
before every replay, exactly as the eager step draws them, so replaying changes no number.

Every rule and every schedule is graphed (max-norm included): the numbers that change from
step to step (the step count, bias corrections, the schedule's factor) are device tensors
the captured step updates itself (optim.py). Input dropout is not: its masks are drawn
inside the step, where a replay would freeze them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import torch

__all__ = ["GraphFailed", "GraphedGroups", "graphable", "train_eagerly"]

log = logging.getLogger(__name__)
_told = False  # whether this process has said a graph failed (it says so once)


class GraphFailed(Exception):
    """A captured step that could not be made or replayed. `done`: the indices of the
    epoch's order that replays consumed before it, so the rest can run eagerly."""

    def __init__(self, cause: BaseException, done: int = 0) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause, self.done = cause, done


def train_eagerly(stacks: Sequence[Stack], failure: GraphFailed) -> None:
    """Graphs are an optimization: a stack whose graph failed steps eagerly from now on
    (the same numbers, more launches), and the run goes on. Said once per process."""
    global _told
    for stack in stacks:
        stack.use_graphs = False
    if not _told:
        _told = True
        log.warning("a CUDA graph of the training step failed (%s): its stacks train "
                    "eagerly, slower but with the same numbers", failure)

class Stack(Protocol):
    """What a graph needs of engine.Stack (which imports this module)."""

    device: str
    input_dropout: bool
    use_graphs: bool

    @property
    def schedule(self) -> str: ...

    members: list[int]
    shapes: list[tuple[int, int]]
    flat: torch.Tensor
    buf: torch.Tensor
    steps: int

    def masked_layers(self) -> list[bool]: ...

    def mutable(self) -> list[torch.Tensor]: ...

    def draw_masks(self, batch: int) -> list[torch.Tensor | None]: ...

    def step(self, x: torch.Tensor, y: torch.Tensor, rows: int | None = None,
             masks: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor: ...


def graphable(stack: Stack) -> bool:
    """On a GPU, any rule and schedule, without input dropout (whose [P, B, 784] masks are
    drawn inside the step, where a replay would freeze them)."""
    return stack.use_graphs and stack.device.startswith("cuda") and not stack.input_dropout


class GraphedGroups:
    """The steps of one or more stacks on one shared batch, captured as one CUDA graph.

    One stack is a lone stack's step; several are a mixed-shape population's groups, each
    on its own stream, so the GPU runs the small kernels of different shapes side by side.
    Each stack computes exactly what it computes alone; loss sums and last losses
    accumulate inside the graph.
    """

    def __init__(self, stacks: Sequence[Stack], images: torch.Tensor, labels: torch.Tensor,
                 batch_size: int) -> None:
        self.stacks, self.images, self.labels = list(stacks), images, labels
        device = self.stacks[0].device
        self.idx = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.masks = [[torch.ones((len(s.members), batch_size, width), device=device)
                       if masked else None
                       for masked, (width, _) in zip(s.masked_layers(), s.shapes[:-1],
                                                     strict=False)] for s in self.stacks]
        self.loss_sums = [torch.zeros(len(s.members), device=device) for s in self.stacks]
        self.lasts = [torch.zeros(len(s.members), device=device) for s in self.stacks]
        cuda = device.startswith("cuda")
        self.streams = [torch.cuda.Stream(device=device)  # type: ignore[no-untyped-call]
                        for _ in self.stacks] if cuda else []
        # the warm-up steps change weights, buffers, step counts and optimizer state: all
        # are put back, so the graph's first replay is the run's next step
        saved = [([t.clone() for t in s.mutable()], s.steps) for s in self.stacks]
        try:
            self.warm_up()
            self.capture()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - whatever a capture raises: run eagerly
            raise GraphFailed(exc) from exc
        finally:  # captured or not, the next step is the run's next one
            for s, (tensors, steps) in zip(self.stacks, saved, strict=True):
                for live, before in zip(s.mutable(), tensors, strict=True):
                    live.copy_(before)
                s.steps = steps

    def body(self) -> None:
        """One step of every stack on the batch at self.idx, with the static masks; each
        stack on its own stream on a GPU."""
        x = self.images.index_select(0, self.idx)
        y = self.labels.index_select(0, self.idx)
        here = torch.cuda.current_stream(x.device) if self.streams else None
        for k, stack in enumerate(self.stacks):
            with contextlib.nullcontext() if here is None else \
                    torch.cuda.stream(self._waiting(k, here)):
                loss = stack.step(x, y.expand(len(stack.members), -1), masks=self.masks[k])
                self.loss_sums[k].add_(loss)
                self.lasts[k].copy_(loss)
        for stream in self.streams:
            assert here is not None
            here.wait_stream(stream)

    def _waiting(self, k: int, here: torch.cuda.Stream) -> torch.cuda.Stream:
        """Stack k's stream, once it has waited for the work queued before the step."""
        self.streams[k].wait_stream(here)
        return self.streams[k]

    def warm_up(self) -> None:
        """Two steps before the capture, on a side stream (CUDA's rule for capturing)."""
        device = self.idx.device
        side = torch.cuda.Stream(device=device)  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self.body()
        torch.cuda.current_stream(device).wait_stream(side)

    def capture(self) -> None:
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.body()

    def replay(self) -> None:
        """The captured step, as recorded: no Python runs (so no step is counted)."""
        self.graph.replay()

    def start_epoch(self) -> None:
        for t in self.loss_sums:
            t.zero_()

    def run(self, order: torch.Tensor, between_batches: Callable[[], None] | None) -> int:
        """Start an epoch and replay every full batch of `order` (on the device); returns
        how many of its indices were used. The short last batch is the caller's, eager."""
        self.start_epoch()
        batch = len(self.idx)
        full = len(order) // batch * batch
        for i in range(0, full, batch):
            try:
                self(order[i:i + batch])
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # noqa: BLE001 - the rest of the epoch runs eagerly
                raise GraphFailed(exc, i) from exc
            if between_batches is not None:
                between_batches()
        return full

    def __call__(self, idx: torch.Tensor) -> None:
        self.idx.copy_(idx)
        for stack, masks in zip(self.stacks, self.masks, strict=True):
            for static, mask in zip(masks, stack.draw_masks(len(idx)), strict=True):
                if static is not None and mask is not None:
                    static.copy_(mask)
        self.replay()
        for stack in self.stacks:
            stack.steps += 1
