"""The frontier's tuned rows (runners/frontier/tuned.py): grids learned per mixture on noise disjoint from the
scored noise, at the budget's NFE, not worse than the grid the tuning started from on the scored noise, and their
section of the report."""
import sys

import numpy as np
import pytest
import torch

from runners.frontier import MixtureSet, TuneSettings, markdown, tuned_rows
from runners.frontier.diffusers_side import T
from samplers import NoiseSchedule, expected_nfe, sample
from samplers.grids import spaced_grid
from tests.conftest import load_script

SCHEDULE = NoiseSchedule("linear")


@pytest.fixture(scope="module")
def tiny():
    """Two mixtures, 16 scored noises each; UniPC-3(bh2) and iPNDM tuned at budget 5 on 32 other noises per
    mixture, 4 iterations."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the analytic model's small ops are fastest single-threaded (as run_frontier runs it)
    try:
        problem = MixtureSet([0, 1], 16, SCHEDULE, noise_offset=1000)
        exact = problem.exact(SCHEDULE.alpha_bar(T - 1), 1.0)
        settings = TuneSettings(methods=("UniPC-3(bh2)", "iPNDM"), noises=32, iterations=4)
        return problem, exact, tuned_rows(problem, exact, SCHEDULE, [5], 1000, settings)
    finally:
        torch.set_num_threads(threads)


def test_tuned_rows_have_the_budgets_nfe_and_tune_on_other_noise(tiny):
    problem, _, rows = tiny
    assert [(r["side"], r["name"], r["budget"]) for r in rows] == [
        ("ours-tuned", "UniPC-3(bh2)@tuned", 5), ("ours-tuned", "iPNDM@tuned", 5)]
    for r in rows:
        method = r["name"].split("@")[0]
        assert r["nfe"] == expected_nfe(method, r["steps"], SCHEDULE) == 5 and r["steps"] == 5
        assert all(len(g) == r["steps"] + 1 and g[0] == T - 1 and g[-1] == -1 for g in r["grids"])
        assert r["mixtures"] == [0, 1] and len(r["per_mixture"]) == 2
        # the tuning noise comes from other seeds than the scored noise, and is other noise
        assert r["tune_noise_seeds"] == [90000, 90001] and r["scored_noise_seeds"] == [1000, 1001]
        assert not set(r["tune_noise_seeds"]) & set(r["scored_noise_seeds"])
    tuning = MixtureSet([0, 1], 32, SCHEDULE, noise_offset=90000)
    assert not any(torch.equal(a[:16], b) for a in tuning.noises for b in problem.noises)


def test_a_tuned_row_is_its_grids_scored_on_the_benchmarks_noise(tiny):
    problem, exact, rows = tiny
    r = rows[1]
    errs = [(sample(m, x, SCHEDULE, "iPNDM", timesteps=g) - e).pow(2).mean().sqrt().item()
            for m, x, e, g in zip(problem.mixtures, problem.noises, exact.split(problem.batch), r["grids"])]
    assert np.allclose(r["per_mixture"], errs, rtol=1e-9) and np.isclose(r["rmse"], np.mean(errs), rtol=1e-9)


def test_tuned_is_not_worse_than_its_start_on_the_scored_noise(tiny):
    """The held-out selection keeps the start grid unless an iterate beats it on held-out tuning noise. On the
    scored noise: per mixture, the statistic the tuning minimises (geometric mean over samples of the RMS error)
    is at most 5% above the start grid's (here it is 1.5–3.5× lower), and so is the benchmark's mean RMSE over the
    mixtures. (The RMSE is not monotone in general: one sample that ends in another component under the tuned grid
    but not under the start dominates a mixture's RMSE; with 8 iterations here it happens for UniPC-3 on mixture 1.)"""
    problem, exact, rows = tiny
    for r in rows:
        method = r["name"].split("@")[0]
        starts = []
        for i, (m, x, e) in enumerate(zip(problem.mixtures, problem.noises, exact.split(problem.batch))):
            start = spaced_grid(SCHEDULE, r["steps"], r["start_spacings"][i])
            err = (sample(m, x, SCHEDULE, method, timesteps=start) - e).pow(2).flatten(1).mean(1)
            starts.append(err.mean().sqrt().item())
            assert np.isclose(r["start_geo"][i], err.log().mean().mul(0.5).exp().item(), rtol=1e-9)
            assert r["geo"][i] <= 1.05 * r["start_geo"][i], (method, i, r["geo"][i], r["start_geo"][i])
        assert np.allclose(r["start_per_mixture"], starts, rtol=1e-9)
        assert r["rmse"] <= 1.05 * np.mean(starts), (method, r["rmse"], np.mean(starts))
        held_start, held_end = zip(*r["held_out"])
        assert all(b <= a for a, b in zip(held_start, held_end))


def test_overlapping_tuning_and_scored_noise_is_refused(tiny):
    problem, exact, _ = tiny
    with pytest.raises(ValueError, match="overlap"):
        tuned_rows(problem, exact, SCHEDULE, [5], 1000, TuneSettings(methods=("iPNDM",), offset=1001))


def test_report_puts_tuned_fixed_and_diffusers_side_by_side(tiny):
    """The tuned table: best tuned, best fixed of ours, diffusers' best over the tuned mixtures, and the ratios."""
    problem, _, tuned = tiny

    def row(side, name, per):
        return dict(side=side, name=name, budget=5, steps=5, nfe=5, rmse=float(np.mean(per)),
                    median=float(np.median(per)), flips=0, per_mixture=per)

    rows = [row("ours", "UniPC-3(bh2)@logsnr-ends", [0.04, 0.06]), row("ours", "DDIM", [0.01, 0.5]),
            row("ours", "iPNDM@quadratic", [0.05, 0.07]),
            row("diffusers", "UniPCMultistep[x]", [0.2, 0.2])] + tuned
    text = markdown(rows, [5], [0, 1], 6, "linear", [], [], [], {}, 1.0, 1000)
    t = min(tuned, key=lambda r: r["rmse"])
    line = next(ln for ln in text.split("### Tuned grids")[1].splitlines() if ln.startswith("| 5 |"))
    cells = [c.strip() for c in line.split("|")]
    assert cells[2].startswith(t["name"]) and cells[4].startswith("UniPC-3(bh2)@logsnr-ends")
    assert cells[6].startswith("UniPCMultistep[x]") and cells[8] == f"**{t['rmse'] / 0.2:.2f}×**"
    same = 0.05 if t["name"].startswith("UniPC") else 0.06
    assert cells[9] == f"{t['rmse'] / 0.05:.2f}×" and cells[12] == f"**{t['rmse'] / same:.2f}×**"
    assert "90000 + mixture seed" in text and "seed 1000 + mixture seed" in text


def _bench_frontier(monkeypatch, *args):
    """scripts/bench_frontier.py's main() in this process (no interpreter start-up)."""
    module = load_script("bench_frontier")
    monkeypatch.setattr(sys, "argv", ["bench_frontier.py", *map(str, args)])
    module.main()


def test_no_tuned_keeps_the_fast_path_and_overlapping_seeds_are_refused(tmp_path, monkeypatch, capsys):
    import torch as _torch

    threads = _torch.get_num_threads()
    out = tmp_path / "FRONTIER.md"
    _bench_frontier(monkeypatch, "--budgets", "5", "--mixtures", "0", "--batch", "2", "--skip-fid", "--no-tuned",
                    "--out", out)
    _torch.set_num_threads(threads)
    text = out.read_text()
    assert "| 5 |" in text and "Tuned grids" not in text and "@tuned" not in text
    with pytest.raises(SystemExit) as exit_:
        _bench_frontier(monkeypatch, "--mixtures", "0", "--tune-offset", "1000", "--skip-fid",
                        "--out", tmp_path / "x.md")
    assert exit_.value.code == 2 and "--tune-offset" in capsys.readouterr().err and not (tmp_path / "x.md").exists()
