#!/usr/bin/env python
"""Grids searched on FID (``samplers.search_timesteps``) on the digits model, scored on noise the search never saw.

For each budget: the search starts from the method's released grid (``@paper``: first timestep T − T/N, last
evaluation at t = 0; both learned/pinned as ``learn_first=True, last=0.0``) and minimises the FID of
``--samples`` samples drawn from the tuning noise stream (``runners.tune.TUNE_STREAM``, which ``main.py sample``
never uses); the found grid and its start are then scored by FID on ``--seeds`` noise seeds of the sampling stream
(the scored noise of docs/TUNED_FID.md), mean ± sd over seeds.

    python scripts/bench_grid_search.py                                  # NFE 3 and 4, ~25 min on 2 busy cores
    python scripts/bench_grid_search.py --nfe 3 --methods "DPM-Solver++(2M)" --evaluations 40

Transfer check (``--search-classifier W``): the search minimises the Fréchet distance in the features of another
digits classifier (weights W, e.g. ``scripts/train_digits_classifier.py --seed 1 --out W``; reference statistics
from the 1,797 digits in its features), and the found grid is still scored with the demo's own FID network, so
the search never sees the feature network it is judged by.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from samplers import search_timesteps  # noqa: E402

# the best fixed configurations of docs/TUNED_FID.md at NFE 3 and 4
METHODS = {3: "DPM-Solver++(2M)", 4: "iPNDM"}


def main() -> None:
    from bench_tuned_fid import digits_network, fid_of
    from runners.frontier.fid_screen import DIGITS_SHAPE, DigitsFID
    from runners.tune import TUNE_STREAM, stream_noise

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nfe", default="3,4", help="budgets, comma-separated")
    p.add_argument("--methods", default=None, help="one method per budget, comma-separated (default: the best "
                                                    "fixed configuration's: DPM-Solver++(2M) at 3, iPNDM at 4)")
    p.add_argument("--samples", type=int, default=2000, help="tuning samples per FID, and scored samples per seed")
    p.add_argument("--seeds", type=int, default=5, help="scored noise seeds 0..N-1")
    p.add_argument("--evaluations", type=int, default=40, help="search evaluations after the start")
    p.add_argument("--search-classifier", default=None, metavar="WEIGHTS",
                   help="search on the Fréchet distance in this digits classifier's features instead of the "
                        "scoring FID network's (transfer check)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    budgets = [int(b) for b in args.nfe.split(",") if b.strip()]
    methods = args.methods.split(",") if args.methods else [METHODS[b] for b in budgets]

    fid = DigitsFID(args.samples)
    net = digits_network()
    x_tune = stream_noise(args.samples, DIGITS_SHAPE, 0, TUNE_STREAM)
    search_fid = fid if args.search_classifier is None else other_network_fid(fid, args.search_classifier)

    def scored(method, grid) -> list[float]:
        values = []
        for seed in range(args.seeds):
            fid.reseed(seed)
            values.append(fid_of(fid, net, method, timesteps=grid))
        return values

    searched_on = "FID" if args.search_classifier is None else "FD in the --search-classifier's features"
    print(f"| NFE | method | grid | {searched_on} on the tuning noise | scored FID (mean ± sd over seeds) | ratio | "
          "search time |")
    print("|---|---|---|---|---|---|---|")
    for nfe, method in zip(budgets, methods):
        t0 = time.perf_counter()
        with tqdm(desc=f"search {method} NFE {nfe}", unit="FID", dynamic_ncols=True) as bar:
            def progress(state):
                bar.total = state["evaluations"]
                bar.set_postfix(best=f"{state['best']:.2f}")
                bar.update(1)

            def tuning_fid(grid, method=method) -> float:  # the tuning noise, never the scored one
                return fid_of(search_fid, net, method, timesteps=grid, x_T=x_tune)

            grid, info = search_timesteps(tuning_fid, fid.schedule, f"{method}@paper", nfe,
                                          evaluations=args.evaluations, learn_first=True, last=0.0,
                                          callback=progress, return_info=True)
        seconds = time.perf_counter() - t0
        start, found = scored(method, info.start), scored(method, grid)
        for label, g, tuning, values in (("released grid (start)", info.start, info.objective_start, start),
                                         ("searched", grid, info.objective, found)):
            print(f"| {nfe} | {method} {label} | {', '.join(f'{t:.1f}' for t in g)} | {tuning:.2f} | "
                  f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} | "
                  f"{statistics.mean(values) / statistics.mean(start):.2f}× | "
                  f"{f'{seconds:.0f} s' if label == 'searched' else ''} |", flush=True)


def other_network_fid(fid, weights: str):
    """A view of ``fid`` whose extractor is the digits classifier ``weights`` and whose reference statistics are
    the digits dataset's in that network's features (same schedule and noise)."""
    from types import SimpleNamespace

    from runners.datasets import digits_images
    from runners.errors import UserError
    from runners.features import build_extractor
    from runners.fid import statistics

    try:
        extractor = build_extractor("digits", weights, "cpu")
    except UserError as e:  # a missing or unreadable file: one line, before any search starts
        sys.exit(f"error: --search-classifier: {e}")
    if extractor.weights_sha256 == fid.extractor.weights_sha256:
        sys.exit("error: --search-classifier is the scoring FID network itself; give another classifier's weights")
    images = digits_images()
    mu, sigma = statistics(extractor(images).numpy())
    reference = {"mu": mu, "sigma": sigma, "extractor": extractor.name, "dims": len(mu), "num_images": len(images),
                 "source": f"DIGITS:train in {weights}", "extractor_sha256": extractor.weights_sha256}
    return SimpleNamespace(schedule=fid.schedule, extractor=extractor, reference=reference, x_T=fid.x_T)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
