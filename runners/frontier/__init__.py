"""The sampler benchmarks as code: scripts/bench_frontier.py (our samplers against diffusers' schedulers at fixed
NFE budgets, docs/FRONTIER.md) and scripts/bench_samplers.py (accuracy per NFE and sampler overhead) are command
lines over this package.

* ``diffusers_side`` — the diffusers scheduler configurations compared (``diffusers_configs``) and THE one driver
  of a diffusers scheduler on an ε-model (``run_scheduler``; ``run_diffusers``, ``diffusers_fit`` for budgets),
  shared with tests/samplers/test_diffusers_parity.py and test_exponential.py. diffusers is imported lazily: it is
  a test/benchmark-only dependency.
* ``ours_side`` — which of ``samplers.available()`` take part, and their step count for a budget.
* ``analytic`` — THE analytic RMSE to the exact probability-flow endpoint over Gaussian mixtures
  (``MixtureSet``), and both benchmarks' tables of it (``analytic_table``, ``accuracy_table``).
* ``tuned`` — the tuned rows: a grid learned by ``samplers.tune_timesteps`` per mixture, method and budget on
  noise disjoint from the scored noise (``TuneSettings``, ``tuned_rows``).
* ``fid_screen`` — FID on the digits demo model (``DigitsFID``) and the screen → final → seed-spread stage
  (``fid_table``).
* ``overhead`` — the samplers' time outside a CIFAR-10-sized network.
* ``report`` — markdown (docs/FRONTIER.md links the hand-written docs/FRONTIER_READING.md, never splices it),
  console tables and plots.
* ``run`` — both benchmarks end to end (``run_frontier``, ``run_samplers``) and the command-line argument types.
"""
from .analytic import FLIP, MixtureSet, accuracy_table, analytic_table
from .diffusers_side import DIFFUSERS_BETAS, diffusers_configs, diffusers_fit, run_diffusers, run_scheduler
from .fid_screen import DigitsFID, fid_table
from .ours_side import PAPER_METHODS, our_fit, our_methods
from .report import markdown, seed_text
from .run import budget_list, parse_seeds, run_frontier, run_samplers
from .tuned import TUNE_OFFSET, TUNED_METHODS, TuneSettings, tuned_rows

__all__ = [
    "DIFFUSERS_BETAS", "FLIP", "PAPER_METHODS", "DigitsFID", "MixtureSet", "accuracy_table", "analytic_table",
    "budget_list", "diffusers_configs", "diffusers_fit", "fid_table", "markdown", "our_fit", "our_methods",
    "parse_seeds", "run_diffusers", "run_frontier", "run_samplers", "run_scheduler", "seed_text", "TUNE_OFFSET",
    "TUNED_METHODS", "TuneSettings", "tuned_rows",
]
