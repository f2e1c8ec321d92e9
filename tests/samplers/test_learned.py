"""Learned solvers (samplers/learned.py).

* with every coefficient zero the scheme is DPM-Solver++(2M) on its grid (the library's engine, digits network and
  an analytic mixture); the network is read at ``network_times`` and nowhere else;
* theory: for point-mass data x̂0 is constant, so every difference m_k − m_i vanishes and the scheme returns the
  point whatever its predictor and corrector weights are; the affine scales (which give that up on purpose) act
  exactly as written;
* ``learn_solver``: never ends above its start on the held-out noise, lowers it where there is room, is
  deterministic, and its result survives ``as_dict``/``from_dict``;
* one-line ValueErrors for solvers and inputs that cannot work.
"""
import json
import math

import pytest
import torch

from models import load_model
from runners.config import load_config
from samplers import LearnedSolver, NoiseSchedule, learn_solver, plan, sample, tune_timesteps
from samplers.learned import BASE
from samplers.solver_tuning import grid_stage_holdout
from samplers.tuning import _split
from tests.conftest import REPO
# the analytic cases and fixtures of the learned grids' tests (the same linear schedule)
from tests.samplers.test_tuning import PointMass, mixture, noise, one_line, one_thread  # noqa: F401

SCHEDULE = NoiseSchedule("linear")
T = SCHEDULE.T


@pytest.fixture(scope="module")
def problem(mixture):
    x = noise(48, seed=1)
    return x, mixture.flow_endpoint(x, float(SCHEDULE.alphas_cumprod[-1]), 1.0)


def random_solver(grid, seed=1, history=3, shift=0.0, affine=0.0):
    gen = torch.Generator().manual_seed(seed)
    n = len(grid) - 1
    return LearnedSolver(grid, [max(t + shift, 0.0) for t in grid[:-1]],
                         (0.3 * torch.randn(n, history - 1, generator=gen, dtype=torch.float64)).tolist(),
                         (0.3 * torch.randn(n, history, generator=gen, dtype=torch.float64)).tolist(),
                         [affine] * n, [-affine] * n)


@pytest.mark.parametrize("grid", [[999.0, 644.4, 369.6, 154.0, 41.5, -1.0], [999.0, 500.0, -1.0], [999.0, -1.0],
                                  [700.5, 300.0, 10.0, 0.0, -1.0]])
def test_zero_coefficients_are_dpm_solver_2m_on_the_digits_network(grid):
    cfg = load_config(REPO / "configs" / "digits.yml")
    net = load_model(cfg, REPO / "models" / "weights" / "digits_ddpm_ema.pt").double()
    schedule = NoiseSchedule.from_config(cfg["Schedule"])
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        ours, info = sample(net, x, schedule, LearnedSolver.start(grid), return_info=True)
        library = sample(net, x, schedule, BASE, timesteps=grid)
    torch.testing.assert_close(ours, library, rtol=0, atol=1e-12)
    assert info.nfe == len(grid) - 1 and info.timesteps == grid and info.model_timesteps == grid[:-1]


@pytest.mark.parametrize("history", [2, 3, 4])
def test_zero_coefficients_match_the_library_for_any_history(mixture, history):
    grid = [999.0, 800.0, 500.0, 250.0, 90.0, 20.0, -1.0]
    x = noise(8, seed=2)
    ours = sample(mixture, x, SCHEDULE, LearnedSolver.start(grid, history))
    torch.testing.assert_close(ours, sample(mixture, x, SCHEDULE, BASE, timesteps=grid), rtol=0, atol=1e-12)


def test_the_network_is_read_at_the_network_times(mixture):
    grid = [999.0, 600.0, 200.0, -1.0]
    solver = random_solver(grid, shift=-7.5)
    _, info = sample(mixture, noise(3), SCHEDULE, solver, return_info=True)
    assert info.model_timesteps == [991.5, 592.5, 192.5] and info.nfe == 3
    assert plan(solver, SCHEDULE).nfe == 3 and plan(solver, SCHEDULE).grid.timesteps == tuple(grid)


@pytest.mark.parametrize("history", [2, 3])
def test_point_mass_data_is_exact_for_any_predictor_and_corrector(history):
    x0 = noise(1, seed=5)
    x = noise(4, seed=6)
    grid = [999.0, 700.0, 400.0, 150.0, 30.0, -1.0]
    solver = random_solver(grid, history=history)
    out = sample(PointMass(x0), x, SCHEDULE, solver)
    torch.testing.assert_close(out, x0.expand_as(out), rtol=0, atol=1e-10)
    # and a model that is not a point mass does see the coefficients (the check above is not vacuous)
    tanh = lambda x, t: torch.tanh(x)  # noqa: E731
    assert (sample(tanh, x, SCHEDULE, solver) - sample(tanh, x, SCHEDULE, LearnedSolver.start(grid, history))
            ).abs().max() > 1e-3


def test_affine_scales_act_as_written():
    """One step from T−1 to data: x_N = (1 + s)·x̂0 + a·x/α, x̂0 the data prediction at T−1."""
    x = noise(4, seed=7)
    a, s = 0.05, -0.1
    model = lambda x, t: torch.tanh(x)  # noqa: E731
    solver = LearnedSolver([999.0, -1.0], [999.0], [[0.0, 0.0]], [[0.0, 0.0, 0.0]], [a], [s])
    alpha, sigma = math.sqrt(SCHEDULE.alpha_bar_lerp(999.0)), math.sqrt(1 - SCHEDULE.alpha_bar_lerp(999.0))
    expected = (1 + s) * (x - sigma * torch.tanh(x)) / alpha + a * x / alpha
    torch.testing.assert_close(sample(model, x, SCHEDULE, solver), expected, rtol=1e-12, atol=1e-12)
    assert solver.affine and not LearnedSolver.start([999.0, -1.0]).affine


def test_the_grid_stage_never_trains_on_the_solvers_held_out_noises(mixture, problem):
    # Both stages hold out the first noises of one seeded permutation; with holdout > n/4 the grid stage used to
    # hold out only n/4 of them and train on the rest of learn_solver's held-out part.
    x, ref = problem
    n, holdout, seed = len(x), 20, 5
    assert grid_stage_holdout(128, 64) == 64 and grid_stage_holdout(1024, 64) == 256  # n >= 4·holdout: as before
    grid_train, _ = _split(n, grid_stage_holdout(n, holdout), seed)
    solver_held = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:holdout]
    assert not set(grid_train.tolist()) & set(solver_held.tolist())
    _, info = learn_solver(mixture, SCHEDULE, 4, x, reference=ref, iterations=0, holdout=holdout, seed=seed,
                           return_info=True)
    assert info.start_grid == tune_timesteps(mixture, SCHEDULE, BASE, 4, x, reference=ref, seed=seed,
                                             holdout=grid_stage_holdout(n, holdout))


def test_learning_never_ends_above_its_start_and_is_deterministic(mixture, problem):
    x, ref = problem
    kw = dict(reference=ref, iterations=6, batch_size=8, holdout=12, eval_every=2, seed=3)
    seen = []
    solver, info = learn_solver(mixture, SCHEDULE, 4, x, callback=seen.append, return_info=True, **kw)
    assert solver.nfe == 4 and solver.timesteps[0] == T - 1 and solver.timesteps[-1] == -1
    assert info.held_out_loss <= info.held_out_loss_start and info.n_held_out == 12 and info.n_train == 36
    final = [s for s in seen if s["lr_scale"] == info.lr_scale]  # earlier attempts may have backtracked
    assert [s["iteration"] for s in final] == list(range(1, 7))
    assert learn_solver(mixture, SCHEDULE, 4, x, **kw) == solver
    again = LearnedSolver.from_dict(json.loads(json.dumps(solver.as_dict())))
    assert again == solver and again.sha256 == solver.sha256
    torch.testing.assert_close(sample(mixture, x, SCHEDULE, again), sample(mixture, x, SCHEDULE, solver), rtol=0,
                               atol=0)


def test_learning_lowers_the_held_out_loss_past_the_tuned_grid(mixture):
    """On a mixture at NFE 4 the tuned grid leaves room that the coefficients take: held-out noise, exact flow."""
    x = noise(96, seed=8)
    ref = mixture.flow_endpoint(x, float(SCHEDULE.alphas_cumprod[-1]), 1.0)
    grid = tune_timesteps(mixture, SCHEDULE, BASE, 4, x, reference=ref, iterations=10, seed=0)
    solver, info = learn_solver(mixture, SCHEDULE, 4, x, reference=ref, grid=grid, iterations=60, batch_size=32,
                                holdout=32, eval_every=10, affine=True, return_info=True)
    assert info.start_grid == grid
    assert info.held_out_loss < 0.7 * info.held_out_loss_start
    test = noise(64, seed=9)
    ref_test = mixture.flow_endpoint(test, float(SCHEDULE.alphas_cumprod[-1]), 1.0)

    def geo_rms(out):
        return float((out - ref_test).pow(2).flatten(1).mean(1).log().mean().div(2).exp())

    assert geo_rms(sample(mixture, test, SCHEDULE, solver)) < 0.8 * geo_rms(sample(mixture, test, SCHEDULE, BASE,
                                                                                  timesteps=grid))


def test_bad_solvers_are_one_line_value_errors():
    good = dict(timesteps=[999.0, 500.0, -1.0], network_times=[999.0, 500.0], predictor=[[0.0, 0.0]] * 2,
                corrector=[[0.0] * 3] * 2, x_scale=[0.0, 0.0], m_scale=[0.0, 0.0])
    LearnedSolver.from_dict(good)
    for change in (dict(timesteps=[999.0, 500.0, 0.0]), dict(timesteps=[500.0, 999.0, -1.0]),
                   dict(network_times=[999.0]), dict(network_times=[999.0, -3.0]), dict(predictor=[[0.0]] * 2),
                   dict(corrector=[[0.0]] * 2), dict(x_scale=[0.0, float("nan")]), dict(m_scale=[0.0, True]),
                   dict(predictor="ab"), dict(base="UniPC-3(bh2)")):
        with pytest.raises(ValueError) as e:
            LearnedSolver.from_dict({**good, **change})
        assert one_line(e), change
    with pytest.raises(ValueError, match="needs x_scale") as e:
        LearnedSolver.from_dict({k: v for k, v in good.items() if k != "x_scale"})
    # A key from another version (or a misspelling next to the right one) is refused, not dropped.
    with pytest.raises(ValueError, match="no field 'x_scales'") as e:
        LearnedSolver.from_dict({**good, "x_scales": [1.0, 1.0]})
    assert one_line(e)


def test_bad_inputs_are_one_line_value_errors(mixture, problem):
    x, ref = problem
    solver = LearnedSolver.start([999.0, 500.0, -1.0])
    short = NoiseSchedule.from_config({"type": "linear", "beta_start": 1e-4, "beta_end": 0.02, "diffusion_step": 500})
    cases = [lambda: sample(mixture, x, SCHEDULE, solver, steps=5),
             lambda: sample(mixture, x, SCHEDULE, solver, timesteps=[999.0, -1.0]),
             lambda: sample(mixture, x, SCHEDULE, solver, convention="official"),
             lambda: sample(mixture, x, SCHEDULE, solver, eta=0.5),
             lambda: sample(mixture, x, short, solver),
             lambda: learn_solver(mixture, SCHEDULE, 1, x, reference=ref),
             lambda: learn_solver(lambda x, t: x.detach() * 0 + t.detach().reshape(-1, 1, 1) * 0, SCHEDULE, 4, x,
                                  reference=ref),
             lambda: learn_solver(mixture, SCHEDULE, 4, x, reference=ref[:3]),
             lambda: learn_solver(mixture, SCHEDULE, 4, x, reference=ref, grid=[999.0, 500.0, -1.0], holdout=12),
             lambda: learn_solver(mixture, SCHEDULE, 4, x, reference=ref, holdout=47),
             lambda: learn_solver(mixture, SCHEDULE, 4, x, reference=ref, history=1)]
    for case in cases:
        with pytest.raises(ValueError) as e:
            case()
        assert one_line(e)
    with pytest.raises(ValueError, match="grid must have 4 steps"):
        cases[8]()


def test_steps_too_large_for_the_error_start_again_smaller(mixture, problem):
    """An analytic mixture at NFE 4 is solved to ~1e-2 by the start: Adam at lr = 30 ruins it at once, so the
    learning backtracks to 0.3 (twice ten times smaller), and never ends above the start."""
    x, ref = problem
    seen = []
    _, info = learn_solver(mixture, SCHEDULE, 4, x, reference=ref, iterations=6, batch_size=8, holdout=12,
                           eval_every=2, lr=30.0, grid_lr=30.0, callback=seen.append, return_info=True)
    assert info.lr_scale == pytest.approx(0.01) and info.held_out_loss <= info.held_out_loss_start
    assert [s["lr_scale"] for s in seen] == pytest.approx([1.0] + [0.1] + [0.01] * 6)  # 1st evaluation: step 2
    _, calm = learn_solver(mixture, SCHEDULE, 4, x, reference=ref, iterations=6, batch_size=8, holdout=12,
                           eval_every=2, lr=0.003, grid_lr=0.002, return_info=True)
    assert calm.lr_scale == 1.0
