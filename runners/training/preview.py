"""Preview sample grids: DDIM samples of the EMA weights from a fixed x_T every ``Train.sample_freq`` steps,
written to TensorBoard (samples/ema_ddim20) and as W/samples/step_NNNNNNN.png.

Building the grid's network and sampling run on forks of the global RNG: the preview never moves the dropout
stream, so a run with previews and a resumed one stay identical.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import torch

from ..seeds import derive_seed
from .rng import GRID, forked

SAMPLE_METHOD, SAMPLE_STEPS = "DDIM", 20


class SampleGrid:
    """DDIM samples from a fixed x_T, so that grids at different steps are comparable."""

    def __init__(self, cfg: dict, schedule, shape: tuple[int, int, int], seed: int, device: torch.device):
        from models import build_model

        with forked(torch.device("cpu")):  # the network is built on the CPU: its initialisation draws there
            self.model = build_model(cfg, eps_only=True).to(device).eval()
        self.schedule, self.device = schedule, device
        n = 64 if shape[-1] <= 64 else 16
        gen = torch.Generator().manual_seed(derive_seed(seed, GRID))
        self.x_T = torch.randn((n, *shape), generator=gen).to(device)
        self.steps = min(SAMPLE_STEPS, schedule.T)
        self.nrow = int(math.isqrt(n))

    @property
    def tag(self) -> str:
        return f"{SAMPLE_METHOD.lower()}{self.steps}"

    @torch.no_grad()
    def __call__(self, weights: dict) -> torch.Tensor:
        """A uint8 CHW grid of samples from ``weights``."""
        from torchvision.utils import make_grid

        from samplers import sample

        from ..images import to_uint8

        self.model.load_state_dict(weights)
        with forked(self.device):
            x0 = sample(self.model, self.x_T, self.schedule, SAMPLE_METHOD, self.steps)
        grid = make_grid(x0.clamp(-1, 1).cpu(), nrow=self.nrow, padding=1, pad_value=1.0)
        return to_uint8(grid)


def write_grid(grid: SampleGrid, weights: dict, which: str, writer, workdir: Path, step: int,
               say: Callable[[str], None]) -> None:
    """Sample ``weights`` into TensorBoard and W/samples; a diverging sampler is reported, not fatal."""
    from ..images import write_png

    start = time.perf_counter()
    try:
        image = grid(weights)
    except FloatingPointError as err:  # early weights can diverge under DDIM: report, keep training
        say(f"sample grid at step {step} skipped: {err}")
        return
    writer.add_image(f"samples/{which}_{grid.tag}", image, step)
    write_png(Path(workdir) / "samples" / f"step_{step:07d}.png", image)
    writer.add_scalar("time/sample_grid_s", time.perf_counter() - start, step)
