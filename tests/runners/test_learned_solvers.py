"""Learned solvers on the command line: main.py tune-solver end to end, solver files read by sample/ablate
--solver-file (and Sample.solver_file), and the refusals that keep a solver with the network it was learned on."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from main import main
from runners.images import sample_path
from runners.setup import sha256_file
from samplers import LearnedSolver

from .conftest import write_tiny

SCHEDULE = {"type": "linear", "beta_start": 1e-4, "beta_end": 0.02, "diffusion_step": 1000}
GRID = [999.0, 500.0, 120.0, -1.0]


def solver(seed=0, grid=GRID) -> LearnedSolver:
    gen = torch.Generator().manual_seed(seed)
    n = len(grid) - 1
    return LearnedSolver(grid, [t - 3.0 for t in grid[:-1]], (0.1 * torch.randn(n, 2, generator=gen)).tolist(),
                         (0.1 * torch.randn(n, 3, generator=gen)).tolist(), [0.01] * n, [-0.02] * n)


def solver_file(path: Path, ckpt: Path, s: LearnedSolver = None, **extra) -> Path:
    data = {"format": "pndm-learned-solver/1", "solver": (s or solver()).as_dict(), "nfe": 3,
            "checkpoint_sha256": sha256_file(ckpt), "schedule": SCHEDULE, **extra}
    path.write_text(json.dumps(data))
    return path


def run(*args):
    return main([*map(str, args), "--device", "cpu"])


def one_line_error(capsys, message):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_sample_with_a_solver_file_matches_the_library_and_records_the_solver(tiny, tmp_path, capsys):
    from models import load_model
    from runners.images import to_uint8
    from runners.sampling import initial_noise
    from samplers import NoiseSchedule, sample

    cfg, ckpt = tiny
    out = tmp_path / "out"
    assert run("sample", "--config", cfg, "--out", out, "--num-samples", 3,
               "--solver-file", solver_file(tmp_path / "s.json", ckpt)) == 0
    assert "DPM-Solver++(2M)@learned" in capsys.readouterr().out
    m = json.loads((out / "manifest.json").read_text())
    assert (m["method"], m["steps"], m["nfe"]) == ("DPM-Solver++(2M)", 3, 3)
    assert m["identity"]["timesteps"] == GRID and m["identity"]["solver_sha256"] == solver().sha256
    model = load_model(yaml.safe_load(cfg.read_text()), ckpt)
    with torch.no_grad():
        x0 = sample(model, initial_noise(range(3), (1, 8, 8), 0), NoiseSchedule("linear"), solver())
        plain = sample(model, initial_noise(range(3), (1, 8, 8), 0), NoiseSchedule("linear"), "DPM-Solver++(2M)",
                       timesteps=GRID)
    assert (to_uint8(x0, True).int() - to_uint8(plain, True).int()).abs().max() > 1  # the coefficients act
    for i, expected in enumerate(to_uint8(x0, True)):
        with Image.open(sample_path(out, i, 3)) as im:
            got = torch.from_numpy(np.array(im))
        assert (got.int() - expected[0].int()).abs().max() <= 1  # channels-last fast path vs plain module
    # another solver on the same grid is another run: the folder is refused, not mixed
    assert run("sample", "--config", cfg, "--out", out, "--num-samples", 3,
               "--solver-file", solver_file(tmp_path / "t.json", ckpt, solver(seed=1))) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "differs in: solver_sha256" in err, err


def test_the_config_key_names_a_solver_too(tiny, tmp_path):
    cfg, ckpt = tiny
    path = solver_file(tmp_path / "s.json", ckpt)
    assert run("sample", "--config", cfg, "--out", tmp_path / "a", "--num-samples", 2,
               "--set", f"Sample.solver_file={path}") == 0
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["identity"]["solver_sha256"] == solver().sha256
    assert run("sample", "--config", cfg, "--out", tmp_path / "b", "--num-samples", 2, "--method", "DDIM",
               "--steps", 4, "--set", f"Sample.solver_file={path}", "--set", "Sample.solver_file=null") == 0
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert (m["method"], m["steps"]) == ("DDIM", 4) and "solver_sha256" not in m["identity"]


@pytest.mark.parametrize("case, message", [
    ("checkpoint", "tuned for checkpoint"),
    ("schedule", "tuned for schedule"),
    ("unrecorded", "does not record the checkpoint"),
    ("raw_weights", "tuned on the checkpoint's raw weights (Model.ema: false)"),  # another network of the file
])
def test_a_solver_for_another_network_or_schedule_needs_force(tiny, tmp_path, capsys, case, message):
    cfg, ckpt = tiny
    (tmp_path / "other").mkdir()
    _, other_ckpt = write_tiny(tmp_path / "other", seed=1)
    path = solver_file(tmp_path / "s.json", other_ckpt if case == "checkpoint" else ckpt,
                       **({"schedule": {"type": "cosine"}} if case == "schedule" else
                          {"config": {"Model": {"ema": False}}} if case == "raw_weights" else {}))
    if case == "unrecorded":
        data = json.loads(path.read_text())
        del data["checkpoint_sha256"]
        path.write_text(json.dumps(data))
    assert run("sample", "--config", cfg, "--out", tmp_path / "out", "--num-samples", 2, "--solver-file", path) == 2
    one_line_error(capsys, message)
    assert not (tmp_path / "out").exists()
    assert run("sample", "--config", cfg, "--out", tmp_path / "out", "--num-samples", 2, "--solver-file", path,
               "--force") == 0


GOOD = solver().as_dict()


@pytest.mark.parametrize("content, extra, message", [
    ("not json", (), "not a solver file"),
    (json.dumps({"solver": GOOD}), (), "not a solver file"),
    (json.dumps({"format": "pndm-time-grid/1", "timesteps": [999, -1], "method": "DDIM"}), (), "give it as --timesteps-file"),
    (json.dumps({"format": "pndm-learned-solver/1"}), (), "not a solver file"),
    (json.dumps({"format": "pndm-learned-solver/1", "solver": {**GOOD, "predictor": [[0.0]]}}), (), "predictor"),
    (json.dumps({"format": "pndm-learned-solver/1", "solver": {**GOOD, "timesteps": [999, 500, 120, 0]}}), (),
     "strictly decreasing"),
    (json.dumps({"format": "pndm-learned-solver/1", "solver": {**GOOD, "timesteps": [1200, 500, 120, -1]}}), (),
     "beyond this schedule"),
    (json.dumps({"format": "pndm-learned-solver/1", "solver": {**GOOD, "network_times": [1100, 500, 120]}}), (),
     "beyond this schedule"),
    (json.dumps({"format": "pndm-learned-solver/1", "solver": {**GOOD, "x_scale": [0, "a", 0]}}), (), "finite"),
    (json.dumps({"format": "pndm-learned-solver/1", "solver": GOOD, "checkpoint_sha256": 5}), (),
     "'checkpoint_sha256' must be"),
    (json.dumps({"format": "pndm-learned-solver/1", "solver": GOOD}), ("--steps", 5), "--steps and a learned solver"),
    (json.dumps({"format": "pndm-learned-solver/1", "solver": GOOD}), ("--method", "DDIM"),
     "--method and a learned solver"),
    (json.dumps({"format": "pndm-learned-solver/1", "solver": GOOD}), ("--eta", 0.5), "eta applies to DDIM only"),
    (json.dumps({"format": "pndm-learned-solver/1", "solver": GOOD}), ("--convention", "official"),
     "standard convention only"),
])
def test_bad_solver_files_are_one_line(tiny, tmp_path, capsys, content, extra, message):
    cfg, _ = tiny
    path = tmp_path / "s.json"
    path.write_text(content)
    assert run("sample", "--config", cfg, "--out", tmp_path / "out", "--num-samples", 2, "--solver-file", path,
               "--force", *extra) == 2
    one_line_error(capsys, message)
    assert not (tmp_path / "out").exists()


def test_a_solver_file_is_not_a_grid_file_and_a_missing_one_is_named(tiny, tmp_path, capsys):
    cfg, ckpt = tiny
    path = solver_file(tmp_path / "s.json", ckpt)
    assert run("sample", "--config", cfg, "--out", tmp_path / "o", "--timesteps-file", path) == 2
    one_line_error(capsys, "give it as --solver-file")
    assert run("sample", "--config", cfg, "--out", tmp_path / "o", "--solver-file", tmp_path / "nope.json") == 2
    one_line_error(capsys, "solver file not found")
    assert run("sample", "--config", cfg, "--out", tmp_path / "o", "--solver-file", path, "--timesteps-file",
               tmp_path / "g.json") == 2
    one_line_error(capsys, "both given")


def test_ablate_adds_a_learned_cell_next_to_the_fixed_ones(tiny, tmp_path, capsys):
    cfg, ckpt = tiny
    args = ("ablate", "--config", cfg, "--out", tmp_path / "abl", "--methods", "DDIM", "--steps", "3",
            "--num-samples", 4, "--reference-samples", 2, "--solver-file", solver_file(tmp_path / "s.json", ckpt))
    assert run(*args) == 0
    cell = json.loads((tmp_path / "abl" / "DPM-Solver++(2M)@learned-3" / "seed0" / "cell.json").read_text())
    assert cell["method"] == "DPM-Solver++(2M)@learned" and cell["nfe"] == 3
    assert "DPM-Solver++(2M)@learned" in (tmp_path / "abl" / "results.md").read_text()
    capsys.readouterr()
    assert run(*args) == 0  # cached: nothing resampled
    assert json.loads((tmp_path / "abl" / "DPM-Solver++(2M)@learned-3" / "seed0" / "cell.json").read_text()) == cell


def test_tune_solver_end_to_end_then_sample_with_it(tiny, tmp_path, capsys):
    cfg, ckpt = tiny
    out = tmp_path / "solver.json"
    args = ("tune-solver", "--config", cfg, "--nfe", 3, "--num-samples", 12, "--holdout", 4, "--eval-samples", 4,
            "--iterations", 3, "--compare", "DDIM,DPM-Solver++(2M)", "--affine", "--out", out)
    assert run(*args) == 0
    assert "best fixed spacing" in capsys.readouterr().out
    data = json.loads(out.read_text())
    s = LearnedSolver.from_dict(data["solver"])
    assert s.nfe == data["nfe"] == 3 and s.timesteps[0] == 999 and s.timesteps[-1] == -1
    assert data["checkpoint_sha256"] == sha256_file(ckpt) and data["schedule"] == SCHEDULE
    assert data["learning"]["held_out_loss"] <= data["learning"]["held_out_loss_start"]
    comparison = data["comparison"]
    assert {"DDIM@paper", "DPM-Solver++(2M)@logsnr"} <= set(comparison["fixed"]) and comparison["best_fixed"] in \
        comparison["fixed"]
    assert set(comparison["learned"]) == {"rms", "median_rms"}
    assert run("sample", "--config", cfg, "--out", tmp_path / "s", "--num-samples", 2, "--solver-file", out) == 0
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["identity"]["solver_sha256"] == s.sha256
    assert run(*args) == 0  # the same command again: the same solver (deterministic), no lock left behind
    assert LearnedSolver.from_dict(json.loads(out.read_text())["solver"]) == s
    assert not [p for p in tmp_path.iterdir() if "lock" in p.name]


@pytest.mark.parametrize("extra, message", [
    (("--nfe", 1), "too small"),
    (("--nfe", 3, "--history", 1), "--history must be at least 2"),
    (("--nfe", 3, "--holdout", 11), "--holdout 11 must leave"),
    (("--nfe", 3, "--compare", "nope"), "unknown method"),
    (("--nfe", 3, "--compare", "DDPM"), "stochastic"),
    (("--nfe", 3, "--compare", "PF"), "adaptive"),
    (("--nfe", 3, "--iterations", -1), "--iterations must be"),
    # checked before learning: the comparison after it had no method to compare with (traceback, run lost)
    (("--nfe", 3, "--compare", "F-PNDM"), "--compare: not one step of F-PNDM fits in NFE 3 (F-PNDM needs 4)"),
])
def test_tune_solver_bad_input_is_one_line(tiny, tmp_path, capsys, extra, message):
    cfg, _ = tiny
    assert run("tune-solver", "--config", cfg, "--num-samples", 12, "--holdout", 4, "--out", tmp_path / "s.json",
               *extra) == 2
    one_line_error(capsys, message)
    assert not (tmp_path / "s.json").exists()


def test_tune_solver_does_not_overwrite_a_file_that_is_not_a_solver(tiny, tmp_path, capsys):
    cfg, _ = tiny
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"format": "pndm-time-grid/1", "timesteps": [999, -1], "method": "DDIM"}))
    for victim in (cfg, grid):
        before = victim.read_bytes()
        assert run("tune-solver", "--config", cfg, "--nfe", 3, "--num-samples", 12, "--holdout", 4,
                   "--out", victim) == 2
        one_line_error(capsys, "is not a solver file; refusing to overwrite")
        assert victim.read_bytes() == before


def test_tune_solver_refuses_a_network_without_time_gradients(tiny, tmp_path, capsys, monkeypatch):
    import runners.tune as tune  # tune-solver loads its network through tune.tuning_inputs

    cfg, _ = tiny
    real = tune.load_network
    monkeypatch.setattr(tune, "load_network", lambda job, device: (lambda f: lambda x, t: f(x, t.detach()))(
        real(job, device)))
    assert run("tune-solver", "--config", cfg, "--nfe", 3, "--num-samples", 12, "--holdout", 4, "--eval-samples", 2,
               "--out", tmp_path / "s.json") == 2
    one_line_error(capsys, "differentiable")
    assert not (tmp_path / "s.json").exists()



@pytest.mark.parametrize("command, extra", [
    ("tune-solver", ("--holdout", 4)),
    ("tune-grid", ("--method", "DDIM")),
])
@pytest.mark.parametrize("nan_from", [800.0, 300.0])  # 300: the differentiability probe at t ≈ 500 sees NaN too
def test_tuning_a_network_that_returns_nan_is_one_line(tiny, tmp_path, capsys, monkeypatch, command, extra,
                                                       nan_from):
    # was a FloatingPointError traceback (exit 1), or "not differentiable in t" when the probe met the NaN
    import runners.tune as tune

    cfg, _ = tiny
    real = tune.load_network
    monkeypatch.setattr(tune, "load_network", lambda job, device: (lambda f: lambda x, t: torch.where(
        (t >= nan_from).view(-1, 1, 1, 1), torch.nan, f(x, t)))(real(job, device)))
    assert run(command, "--config", cfg, "--nfe", 3, "--num-samples", 12, "--eval-samples", 2, "--iterations", 1,
               "--out", tmp_path / "s.json", *extra) == 2
    err = capsys.readouterr().err.strip()  # after what a progress bar had drawn, if one was open: one error line
    assert err.splitlines()[-1].startswith("error: model returned a non-finite ε") and err.count("error") == 1, err
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize("command, extra", [
    ("tune-solver", ("--holdout", 4, "--compare", "DDIM")),
    ("tune-grid", ("--method", "DDIM")),
])
def test_an_nfe_above_the_schedules_length_is_capped_in_the_comparison_too(tiny, tmp_path, command, extra):
    # the tuning capped the steps at T; the comparison asked for steps = NFE > T and raised after all the work
    cfg, _ = tiny
    out = tmp_path / "s.json"
    assert run(command, "--config", cfg, "--set", "Schedule.diffusion_step=10", "--nfe", 12, "--num-samples", 12,
               "--eval-samples", 2, "--iterations", 1, "--out", out, *extra) == 0
    data = json.loads(out.read_text())
    assert data["nfe"] <= 10 and "DDIM@paper" in data["comparison"]["fixed"]
