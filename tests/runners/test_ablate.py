"""main.py ablate: every cell sampled, scored and cached; tables, plot and paired statistics."""
import csv
import math

import numpy as np
import pytest
import torch
import yaml

from main import main
from runners.tables import results_markdown

from .conftest import REPO


def test_ablation_grid_end_to_end_and_resume(tiny, tmp_path, capsys):
    cfg, _ = tiny
    out = tmp_path / "abl"
    args = ["ablate", "--config", str(cfg), "--methods", "ddim,S-PNDM", "--steps", "2,4", "--seeds", "0,1",
            "--num-samples", "150", "--batch-size", "150", "--reference-samples", "8", "--out", str(out),
            "--device", "cpu"]
    assert main(args) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {(r["method"], r["steps"], r["seed"]) for r in rows} == {
        (m, s, d) for m in ("DDIM", "S-PNDM") for s in ("2", "4") for d in ("0", "1")}
    nfe = {(r["method"], r["steps"]): int(r["nfe"]) for r in rows}
    assert nfe == {("DDIM", "2"): 2, ("DDIM", "4"): 4, ("S-PNDM", "2"): 3, ("S-PNDM", "4"): 5}
    assert all(np.isfinite(float(r["fid"])) and float(r["rms"]) > 0 for r in rows)
    assert len(list((out / "S-PNDM-4" / "seed1").glob("*.png"))) == 150
    md = (out / "results.md").read_text()
    assert "Paired FID gap to DDIM" in md and "| S-PNDM |" in md and "(5)" in md
    assert (out / "plot.png").stat().st_size > 1000

    # resumable cell by cell: a rerun reuses every cached cell
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("cell.json")}
    capsys.readouterr()
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("cell.json")} == stamps


def test_paired_gap_and_spread_in_markdown():
    rows = [dict(method=m, steps=10, nfe=n, seed=s, fid=f, rms=0.1, seconds=1.0, num_samples=100)
            for m, n, s, f in [("DDIM", 10, 0, 10.0), ("DDIM", 10, 1, 12.0),
                               ("F-PNDM", 19, 0, 7.0), ("F-PNDM", 19, 1, 8.0)]]
    md = results_markdown(rows)
    assert "11.00 ± 1.41 (10)" in md  # mean ± sd over seeds, NFE
    assert "-3.50 ± 0.71" in md  # paired gaps −3 and −4


def test_an_adaptive_cells_nfe_is_its_seeds_mean_and_range():
    rows = [dict(method="PF", steps=None, nfe=n, seed=s, fid=f, rms=0.1, seconds=1.0, num_samples=100)
            for n, s, f in [(308, 0, 10.0), (302, 1, 12.0)]]
    assert "11.00 ± 1.41 (305, 302–308)" in results_markdown(rows)  # not the first seed's 308


def test_no_rms_for_the_released_convention():
    """Its grids end at ā[0], not at the data the reference solves to: the distance would be the convention's."""
    from runners.ablate import distance_to_reference
    from runners.jobs import Sampling

    assert math.isnan(distance_to_reference(None, Sampling("F-PNDM", 50, "official"), 0, None, None, None))


def test_the_tensorboard_log_holds_only_the_last_runs_numbers(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from runners.tables import write_results

    def rows(fid):
        return [dict(method="DDIM", steps=3, nfe=3, seed=0, fid=fid, rms=0.1, seconds=1.0, num_samples=10)]

    write_results(tmp_path, rows(269.0))
    write_results(tmp_path, rows(273.5))  # a rerun with more samples rescored the cell
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [e.value for e in events.Scalars("fid/DDIM/seed0")] == [273.5]


def test_rms_and_noise_floor_equal_independent_computations(tiny, tmp_path, capsys):
    """The cell's RMS to the reference solution and the noise floor, recomputed here from their definitions with
    the libraries directly (not through the runner)."""
    import re

    import torch
    from pytorch_fid.fid_score import calculate_frechet_distance
    from sklearn.datasets import load_digits

    from models import load_model
    from models.digits_classifier import DigitsClassifier
    from samplers import NoiseSchedule, sample

    cfg, ckpt = tiny
    out = tmp_path / "abl"
    assert main(["ablate", "--config", str(cfg), "--methods", "S-PNDM", "--steps", "3", "--num-samples", "40",
                 "--batch-size", "40", "--reference-samples", "6", "--set", "FID.noise_floor=true", "--out", str(out),
                 "--device", "cpu"]) == 0
    row = next(csv.DictReader(open(out / "results.csv")))

    # RMS: the first 6 samples' noise is sample i's own SeedSequence((seed, i, 0)) stream
    def seed_of(i):
        a, b = np.random.SeedSequence([0, i, 0]).generate_state(2, np.uint32)
        return int((int(a) << 31) ^ int(b))

    x_T = torch.stack([torch.randn((1, 8, 8), generator=torch.Generator().manual_seed(seed_of(i))) for i in range(6)])
    model, schedule = load_model(yaml.safe_load(cfg.read_text()), ckpt), NoiseSchedule("linear")
    with torch.no_grad():
        x0 = sample(model, x_T, schedule, "S-PNDM", steps=3)  # standard grid 666, 333, 0 → starts at t = 666
        exact = sample(model, x_T, schedule, "iPNDM@paper", steps=667)  # every integer t from 666 down to 0
    # rel 1e-4: the ablation samples 40 per batch, this check 6, and oneDNN's CPU kernels round differently for
    # another batch size or thread count (~1e-7 of a pixel, ~1.5e-5 of a distance of 9e-3 with OMP_NUM_THREADS=1)
    assert float(row["rms"]) == pytest.approx(float(((x0.double() - exact.double()) ** 2).mean().sqrt()), rel=1e-4)

    # noise floor: 40 real digits drawn with replacement by torch.randint(seed 0), classifier features, FID
    digits = torch.from_numpy(np.rint(load_digits().images * (255 / 16)).astype(np.uint8))[:, None]
    idx = torch.randint(len(digits), (40,), generator=torch.Generator().manual_seed(0))
    net = DigitsClassifier()
    net.load_state_dict(torch.load(REPO / "models/weights/digits_classifier.pt", weights_only=True))
    with torch.no_grad():
        f = net.eval().features(digits[idx]).double().numpy()
    ref = np.load(REPO / "models/weights/digits_fid_stats.npz")
    floor = calculate_frechet_distance(f.mean(0), np.cov(f, rowvar=False), ref["mu"], ref["sigma"])
    shown = float(re.search(r"score FID ([0-9.]+)", (out / "results.md").read_text()).group(1))
    assert shown == pytest.approx(floor, abs=0.006)  # results.md rounds to 2 decimals


@pytest.mark.parametrize("t0", [300.0, 300.6, 700.5])
def test_reference_starts_where_the_cell_starts(t0):
    """The high-accuracy reference is the flow from the cell's own start — a fractional one (a tuned grid file's)
    included, and one below T/2 (where the paper's grid of t0 + 1 steps would not start at t0): checked against
    the closed-form flow of Gaussian data, where starting at ⌊t0⌋ instead would be off 10–40× the tolerance."""
    import math
    from types import SimpleNamespace

    import torch

    from models import GaussianMixture
    from runners.ablate import References
    from samplers import NoiseSchedule

    schedule = NoiseSchedule("linear")
    gm = GaussianMixture(np.array([[0.5, -1.0, 2.0]]), 4.0, schedule=schedule)
    job = SimpleNamespace(schedule=schedule, num_samples=8, reference_samples=8, image_shape=(3,))
    refs = References(job, 0, gm, torch.device("cpu"))
    refs.x_T = refs.x_T.double()
    got = refs.get(t0)
    exact = gm.flow_endpoint(refs.x_T, float(schedule.alpha_bar_lerp_clamped(t0)), 1.0)
    from_floor = gm.flow_endpoint(refs.x_T, float(schedule.alpha_bar_lerp_clamped(math.floor(t0))), 1.0)
    assert (got - exact).abs().max() < 1e-4
    if t0 % 1:
        assert (from_floor - exact).abs().max() > 1e-3


@pytest.mark.parametrize("centered, scale", [(True, 1.0), (False, 2.0)])
def test_rms_is_in_minus_one_one_units_for_uncentered_models_too(centered, scale):
    """A score-SDE model with centered: false makes data in [0, 1]; its RMS was reported unscaled under the
    table's "[-1, 1] pixel units" heading (half the number of a centered model with the same pixel error)."""
    from types import SimpleNamespace

    from models import GaussianMixture
    from runners.ablate import distance_to_reference
    from runners.jobs import Sampling
    from samplers import NoiseSchedule, sample

    schedule = NoiseSchedule("linear")
    model = GaussianMixture.random(2, (1, 4, 4), seed=0, schedule=schedule)
    x_T = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    reference = torch.zeros_like(x_T)
    refs = SimpleNamespace(x_T=x_T, get=lambda t0: reference)
    job = SimpleNamespace(config={"Model": {"centered": centered}}, schedule=schedule)
    got = distance_to_reference(job, Sampling("DDIM", 3, "standard", nfe=3), 0, model, refs, "cpu")
    expected = float(sample(model, x_T, schedule, "DDIM", 3).double().pow(2).mean().sqrt())
    assert got == pytest.approx(scale * expected, rel=1e-12)
