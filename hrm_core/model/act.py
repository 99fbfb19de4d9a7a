"""Adaptive computation time: run segments until the Q head says halt.

Each segment refines the same decision from the previous segment's (detached) carry. A sample
halts when ``q_halt > q_continue`` or at the segment budget; in training, with probability
``halt_exploration_prob`` a sample must first run a random minimum of 2..budget segments (the
reference's exploration). Once halted, a sample's decision is frozen: later segments still run for
the batch but no longer change (or train) it. Without ACT (early curriculum stages) every sample
runs every segment: plain deep supervision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from hrm_core.model.heads import TradingOutputs
from hrm_core.model.trader import Carry, MarketInputs, TraderBase


@dataclass
class SegmentRun:
    """Per segment: the decision the loss sees (frozen once halted) and which samples were live."""

    outputs: list[TradingOutputs]
    raw: list[TradingOutputs]  # each segment's own decision, detached (targets for the Q head)
    live: list[torch.Tensor]  # [B] bool: the sample had not halted before this segment
    steps: torch.Tensor  # [B] segments each sample used
    carry: Carry

    @property
    def final(self) -> TradingOutputs:
        return self.outputs[-1]


def run_segments(
    model: TraderBase,
    inputs: MarketInputs,
    segments: int,
    act: bool,
    exploration_prob: float = 0.0,
    carry: Carry | None = None,
    generator: torch.Generator | None = None,
    update_H: bool = True,
    stop_when_all_halted: bool = True,
    all_halted: Callable[[torch.Tensor], bool] | None = None,
    exploration_rows: tuple[int, slice] | None = None,
) -> SegmentRun:
    """Run up to ``segments`` segments; halting is learned (``act``) or never (deep supervision).
    ``stop_when_all_halted=False`` always runs the budget (same decisions, no data-dependent
    control flow, which is what ``torch.export`` needs).

    For a slice of a batch split over processes: ``all_halted`` says whether every sample of the
    whole batch halted (so all processes run the same segments), and ``exploration_rows`` (the
    whole batch's size, this slice) draws the exploration for the whole batch and keeps the
    slice's rows, so the slice halts exactly as it would in one process."""
    batch = inputs.batch
    device = inputs.strategic.device
    carry = model.initial_carry(batch) if carry is None else carry
    halted = torch.zeros(batch, dtype=torch.bool, device=device)
    steps = torch.zeros(batch, dtype=torch.long, device=device)
    min_steps = torch.ones(batch, dtype=torch.long, device=device)
    if act and exploration_prob > 0 and segments > 1:
        drawn, rows = exploration_rows or (batch, slice(None))
        explore = (torch.rand(drawn, generator=generator, device=device) < exploration_prob)[rows]
        random_min = torch.randint(2, segments + 1, (drawn,), generator=generator, device=device)[rows]
        min_steps = torch.where(explore, random_min, min_steps)
    outputs, raw, live = [], [], []
    frozen: TradingOutputs | None = None
    for _ in range(segments):
        carry, out = model.segment(carry, inputs, update_H=update_H)
        running = ~halted
        steps = steps + running.long()
        decision = out if frozen is None else out.select(running, frozen)
        outputs.append(decision)
        raw.append(out.detach())
        live.append(running)
        frozen = decision.detach()
        if act:
            wants_halt = (out.q_halt > out.q_continue) | (steps >= segments)
            halted = halted | (running & wants_halt & (steps >= min_steps))
            if stop_when_all_halted and (all_halted(halted) if all_halted else bool(halted.all())):
                break
    return SegmentRun(outputs=outputs, raw=raw, live=live, steps=steps, carry=carry)
