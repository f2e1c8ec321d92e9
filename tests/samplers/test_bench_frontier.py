"""scripts/bench_frontier.py over runners.frontier: a small run writes its table and plot; its digits FID equals
the runner's FID."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from runners.frontier import FLIP, DigitsFID, analytic_table, diffusers_configs, parse_seeds, seed_text
from tests.conftest import REPO


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_small_analytic_run_writes_a_ratio_per_budget(tmp_path, kind):
    out = tmp_path / "FRONTIER.md"
    offset = 1000 if kind == "linear" else 5000  # --noise-offset: held-out noise for the same mixtures
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_frontier.py"), "--budgets", "5",
                           "--mixtures", "0", "--batch", "2", "--skip-fid", "--schedule", kind, "--out", str(out),
                           "--noise-offset", str(offset)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| 5 |"))
    ours, theirs, ratio = float(row.split("|")[3]), float(row.split("|")[6]), row.split("**")[1]
    assert f"{ours / theirs:.2f}×" == ratio
    assert "### Median RMSE over the mixtures" in text and f"{kind} schedule" in text
    assert f"noise seed {offset} + mixture seed" in text
    assert "[FRONTIER_READING.md](FRONTIER_READING.md)" in text and "## Reading" not in text  # linked, not spliced
    assert (tmp_path / "frontier.png").stat().st_size > 10_000


def test_analytic_rows_are_the_per_mixture_errors_of_separate_runs():
    """The bank-batched table = each mixture run on its own (GaussianMixture, no bank): mean, median, flips."""
    import torch

    from models import GaussianMixture
    from samplers import NoiseSchedule, sample

    schedule = NoiseSchedule("linear")
    mixtures, batch = [3, 11, 4], 6
    rows = analytic_table([5], mixtures, batch, schedule)
    row = next(r for r in rows if r["side"] == "ours" and r["name"] == "S-PNDM@power1.5")  # 3 flips here
    errs, flips = [], 0
    for seed in mixtures:
        gm = GaussianMixture.random(8, (3, 8, 8), seed=seed, schedule=schedule)
        x_T = torch.randn(batch, 3, 8, 8, generator=torch.Generator().manual_seed(1000 + seed), dtype=torch.float64)
        diff = sample(gm, x_T, schedule, "S-PNDM@power1.5", steps=4) - gm.flow_endpoint(x_T, schedule.alpha_bar(999))
        errs.append(diff.pow(2).mean().sqrt().item())
        flips += int((diff.pow(2).flatten(1).mean(1).sqrt() > FLIP).sum())
    assert np.isclose(row["rmse"], np.mean(errs), rtol=1e-6) and np.isclose(row["median"], np.median(errs), rtol=1e-6)
    assert row["flips"] == flips > 0 and row["steps"] == 4 and row["nfe"] == 5  # S-PNDM's first step costs 2
    assert any(r["side"] == "diffusers" for r in rows)


def test_mixture_seeds_parse_ranges_and_lists():
    assert parse_seeds("0-3,8") == [0, 1, 2, 3, 8]
    assert seed_text(range(64)) == "0–63" and seed_text([1, 5]) == "1, 5"


def test_digits_fid_is_the_runners_fid_of_the_same_samples():
    """The benchmark's FID of one configuration = sampling the same noise + runners.fid by hand."""
    from runners.fid import fid_from_features
    from runners.images import to_uint8
    from samplers import sample

    fid = DigitsFID(200)
    row = dict(side="ours", name="DDIM", steps=10)
    x0 = sample(fid.model, fid.x_T, fid.schedule, "DDIM", steps=10)
    by_hand = fid_from_features(fid.extractor(to_uint8(x0)).numpy(), fid.reference, fid.extractor.name)
    assert np.isclose(fid(row), by_hand, rtol=1e-9)
    fid.reseed(1)  # another noise seed gives other samples, hence another FID
    assert not np.isclose(fid(row), by_hand, rtol=1e-6)


def test_the_fid_stage_scores_the_fixed_rows_of_both_sides_and_skips_tuned_ones():
    """A tuned row's grids belong to the analytic mixtures (a default full run crashed on one in the FID stage)."""
    from runners.frontier.fid_screen import fid_table

    label = diffusers_configs()[0][0]
    rows = [dict(side="ours", name="DDIM", budget=5, steps=5, nfe=5, rmse=0.1),
            dict(side="diffusers", name=label, budget=5, steps=5, nfe=5, rmse=0.2),
            dict(side="ours-tuned", name="DDIM@tuned", budget=5, steps=5, nfe=5, rmse=0.05, grids=[[999, 1, -1]])]
    screen, final, spread = fid_table(rows, [5], [5], 16, 16, 1, [1])
    assert [r["side"] for r in screen] == ["ours", "diffusers"]
    assert {r["name"] for r in final} >= {"DDIM", label} and all(r["side"] != "ours-tuned" for r in final)
    assert [(s["ours"], s["diffusers"]) for s in spread] == [("DDIM", label)]
    assert all(np.isfinite(r["fid"]) for r in screen + final)


@pytest.mark.parametrize("kind", ["linear", "cosine", "quad"])
def test_diffusers_side_uses_the_benchmarks_schedule(kind):
    from samplers import NoiseSchedule

    ours = NoiseSchedule(kind).alphas_cumprod
    for label, factory in diffusers_configs(kind)[::9]:
        np.testing.assert_allclose(factory().alphas_cumprod.numpy(), ours, atol=1e-6, rtol=0, err_msg=label)


def test_every_diffusers_configuration_finishes_with_finite_samples():
    # bh1 ran with final_sigmas_type="zero", where diffusers returns NaN (B(h) = h is infinite on the step to
    # σ = 0); the frontier dropped those rows without a word, so no bh1 configuration was ever compared
    from models import GaussianMixture
    from runners.frontier import run_diffusers
    from samplers import NoiseSchedule

    schedule = NoiseSchedule("linear")
    model = GaussianMixture.random(3, (2, 4, 4), seed=0, schedule=schedule)
    x_T = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    configs = diffusers_configs()
    assert sum("UniPCMultistep[bh1" in label for label, _ in configs) == 12
    for label, factory in configs:
        x0, nfe = run_diffusers(factory, model, x_T, 6)
        assert torch.isfinite(x0).all(), label
