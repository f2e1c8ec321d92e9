"""Learned time grids (samplers/tuning.py) and the differentiable engine path they use (samplers/scalars.py).

* every fixed-step deterministic method is tunable: the grid is valid for ``sample(timesteps=...)`` and spends the
  largest step count whose NFE fits; the engines on tensor timesteps equal ``sample()`` and their gradients
  equal central finite differences (float64, analytic mixture);
* tuning never increases the held-out loss over its start, and lowers it by a real factor where there is room;
* theory: for point-mass data ε is constant along the flow, so DDIM is exact on every grid (the loss stays at
  rounding level); for N(0, I) data the flow is the identity and a DDIM step multiplies x by cos(θ − θ') with
  sqrt(ā) = cos θ, so the best N-step grid is uniform in θ and leaves the error (1 − cos^N(θ_T/N))·x_T;
* determinism, and one-line ValueErrors for inputs that cannot be tuned.
"""
import math

import pytest
import torch

from models import GaussianMixture
from samplers import NoiseSchedule, available, get_method, sample, tune_timesteps
from samplers.grids import check_timesteps, spaced_grid, uniform_grid
from samplers.tuning import _split, student, teacher_solve, tunable_method

SCHEDULE = NoiseSchedule("linear")
T = SCHEDULE.T
TUNABLE = [n for n in available() if "@" not in n and n not in ("DDPM", "PF")]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: torch's intra-op threads only add contention on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def mixture():
    return GaussianMixture.random(3, (2, 4), seed=4, schedule=SCHEDULE)


def noise(n, seed=0, shape=(2, 4)):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.fixture(scope="module")
def problem(mixture):
    """24 noises and their exact flow endpoints (the reference for the cheap tests)."""
    x = noise(24, seed=1)
    return x, mixture.flow_endpoint(x, float(SCHEDULE.alphas_cumprod[-1]), 1.0)


class PointMass:
    """Data δ_{x0}: ε(x, t) = (x − sqrt(ā)·x0)/sqrt(1 − ā), ā interpolated at (differentiable) t."""

    def __init__(self, x0):
        self.x0 = x0

    def __call__(self, x, t):
        ab = SCHEDULE.alpha_bar_lerp_torch(t).reshape(-1, *[1] * (x.ndim - 1))
        return (x - ab.sqrt() * self.x0) / (1 - ab).sqrt()


def one_line(excinfo):
    return "\n" not in str(excinfo.value)


# ----------------------------------------------------------------------------------------------------------------
# every method

@pytest.mark.parametrize("name", TUNABLE)
def test_every_method_gives_a_valid_grid_at_the_largest_fitting_step_count(name, mixture, problem):
    x, ref = problem
    nfe = 13
    m = get_method(name)
    grid = tune_timesteps(mixture, SCHEDULE, name, nfe, x, reference=ref, iterations=2, batch_size=8)
    steps = len(grid) - 1
    assert m.nfe(steps) <= nfe < m.nfe(steps + 1)  # F-PNDM/FON: 4 steps (13 NFE), S-PNDM 12, the others 13
    assert grid[0] == T - 1 and grid[-1] == -1
    assert check_timesteps(grid, T) == grid and all(a > b for a, b in zip(grid, grid[1:]))
    _, info = sample(mixture, x, SCHEDULE, name, timesteps=grid, return_info=True)
    assert info.nfe == m.nfe(steps)


@pytest.mark.parametrize("name", TUNABLE)
def test_tensor_timesteps_reproduce_sample_and_its_finite_difference_gradient(name, mixture):
    """The engines on 0-dim tensors that require grad compute what sample() computes (≤ 1e-10, float64), and
    autograd's derivative in every interior timestep matches a central difference of sample() itself."""
    x = noise(4, seed=2)
    grid = [999.0, 640.5, 300.25, 80.3, 12.5, 1.7, -1.0]  # away from integers: ā(t) has kinks there
    w = noise(4, seed=3)
    ts = [grid[0]] + [torch.tensor(t, dtype=torch.float64, requires_grad=True) for t in grid[1:-1]] + [-1.0]
    out = student(mixture, SCHEDULE, tunable_method(name)[0], x, ts)
    assert (out - sample(mixture, x, SCHEDULE, name, timesteps=grid)).abs().max() <= 1e-10
    grads = torch.stack(torch.autograd.grad((out * w).sum(), ts[1:-1]))
    h, fd = 1e-4, []
    for k in range(1, len(grid) - 1):
        up, down = list(grid), list(grid)
        up[k] += h
        down[k] -= h
        fd.append(((sample(mixture, x, SCHEDULE, name, timesteps=up)
                    - sample(mixture, x, SCHEDULE, name, timesteps=down)) * w).sum() / (2 * h))
    fd = torch.stack(fd)
    assert (grads - fd).abs().max() <= 1e-6 * fd.abs().max()


def test_float_timesteps_take_the_unchanged_float_path(mixture):
    """With float timesteps the generic scalar code runs the engines' original float operations: bit-identical."""
    x = noise(5, seed=5)
    grid = [999.0, 500.5, 100.0, 10.25, -1.0]
    for name in ("F-PNDM", "FON", "UniPC-3(bh1)", "DPM-Solver++(3M)", "DEIS-3", "VS-PNDM-4"):
        assert torch.equal(student(mixture, SCHEDULE, get_method(name), x, grid),
                           sample(mixture, x, SCHEDULE, name, timesteps=grid))


def test_a_spacing_in_the_name_is_the_start(mixture, problem):
    x, ref = problem
    grid, info = tune_timesteps(mixture, SCHEDULE, "UniPC-3(bh2)@logsnr", 6, x, reference=ref, iterations=0,
                                return_info=True)
    assert grid == spaced_grid(SCHEDULE, 6, "logsnr") and info.start_spacing == "logsnr"
    assert info.method == "UniPC-3(bh2)"


# ----------------------------------------------------------------------------------------------------------------
# the held-out loss

def test_tuning_never_increases_the_held_out_loss(mixture, problem):
    """Even with a learning rate far too large the result is no worse on held-out noise than the start grid."""
    x, ref = problem
    for lr in (0.1, 20.0):
        grid, info = tune_timesteps(mixture, SCHEDULE, "iPNDM", 6, x, reference=ref, iterations=6, lr=lr,
                                    batch_size=8, return_info=True)
        assert info.held_out_loss <= info.held_out_loss_start
        _, held = _split(len(x), 0.25, 0)
        per_sample = lambda g: (sample(mixture, x[held], SCHEDULE, "iPNDM", timesteps=g) - ref[held]) \
            .pow(2).flatten(1).mean(1)  # noqa: E731
        assert per_sample(grid).log().mean() <= per_sample(info.start).log().mean() + 1e-12


def test_the_mse_loss_is_the_held_out_rms_and_never_ends_above_the_start(mixture, problem):
    """loss="mse": the reported losses are the RMS over all held-out samples, and the selection keeps it at or
    below the start grid's."""
    x, ref = problem
    grid, info = tune_timesteps(mixture, SCHEDULE, "iPNDM", 6, x, reference=ref, iterations=6, lr=1.0,
                                batch_size=8, loss="mse", return_info=True)
    _, held = _split(len(x), 0.25, 0)
    rms = lambda g: float((sample(mixture, x[held], SCHEDULE, "iPNDM", timesteps=g) - ref[held])  # noqa: E731
                          .double().pow(2).mean().sqrt())
    assert info.held_out_loss == pytest.approx(rms(grid), rel=1e-9)
    assert info.held_out_loss_start == pytest.approx(rms(info.start), rel=1e-9)
    assert info.held_out_loss <= info.held_out_loss_start


def test_a_distance_is_what_the_grid_is_fitted_to(mixture, problem):
    """``distance``: 4× the default squared distance leaves the log loss's gradient (and so the grid) unchanged and
    doubles every reported RMS; a distance that sees only the first coordinate reports exactly that
    coordinate's held-out RMS, and fits another grid."""
    x, ref = problem
    kw = dict(reference=ref, iterations=5, lr=1.0, batch_size=8, start="uniform", return_info=True)
    grid, info = tune_timesteps(mixture, SCHEDULE, "iPNDM", 6, x, **kw)
    assert info.best_iteration > 0  # the grid moved: the comparisons below are not between two start grids
    scaled = lambda a, b: 4 * (a - b).pow(2).flatten(1).mean(1)  # noqa: E731
    grid4, info4 = tune_timesteps(mixture, SCHEDULE, "iPNDM", 6, x, distance=scaled, **kw)
    assert grid4 == pytest.approx(grid, rel=1e-9, abs=1e-9)
    assert info4.held_out_loss == pytest.approx(2 * info.held_out_loss, rel=1e-9)
    first = lambda a, b: (a - b).flatten(1)[:, 0].pow(2)  # noqa: E731
    grid1, info1 = tune_timesteps(mixture, SCHEDULE, "iPNDM", 6, x, distance=first, loss="mse", **kw)
    _, held = _split(len(x), 0.25, 0)
    out = sample(mixture, x[held], SCHEDULE, "iPNDM", timesteps=grid1)
    assert info1.held_out_loss == pytest.approx(float((out - ref[held]).flatten(1)[:, 0].pow(2).mean().sqrt()),
                                                rel=1e-9)
    assert info1.best_iteration > 0 and grid1 != pytest.approx(grid, rel=1e-6)


def test_a_learned_first_timestep_and_a_pinned_last_one(mixture, problem):
    """learn_first: the first timestep moves below T−1 and the released (paper) grid is a start candidate;
    last: every iterate keeps that timestep before −1. Both keep the held-out loss at or below the start's."""
    x, ref = problem
    T = SCHEDULE.T
    grid, info = tune_timesteps(mixture, SCHEDULE, "iPNDM", 4, x, reference=ref, iterations=6, lr=0.3, batch_size=8,
                                learn_first=True, start="paper", return_info=True)
    assert info.start == [float(t) for t in uniform_grid(SCHEDULE, 4)]  # the released grid: 750, 500, 250, 0, -1
    assert info.best_iteration > 0 and grid[0] < T - 1 and grid != info.start
    assert len(grid) == 5 and grid[-1] == -1 and all(a > b for a, b in zip(grid, grid[1:]))
    assert info.held_out_loss <= info.held_out_loss_start
    grid, info = tune_timesteps(mixture, SCHEDULE, "UniPC-3(bh2)", 5, x, reference=ref, iterations=6, lr=0.3,
                                batch_size=8, last=0.0, return_info=True)
    assert grid[0] == T - 1 and grid[-2:] == [0.0, -1.0] and info.start[-2:] == [0.0, -1.0]
    assert all(a > b for a, b in zip(grid, grid[1:])) and info.held_out_loss <= info.held_out_loss_start
    # the last point stays pinned however the free ones move
    calls = []
    tune_timesteps(mixture, SCHEDULE, "DDIM", 4, x, reference=ref, iterations=3, lr=1.0, batch_size=8,
                   learn_first=True, last=5.0, callback=calls.append)
    assert all(c["grid"][-2] == 5.0 and c["grid"][0] < T - 1 for c in calls)


def test_tuning_lowers_the_held_out_loss_where_there_is_room():
    """DPM-Solver++(3M) at NFE 5 on an 8-component mixture: held-out loss at least 2x lower (measured: 2.8x)."""
    model = GaussianMixture.random(8, (3, 4, 4), seed=0, schedule=SCHEDULE)
    x = noise(64, seed=6, shape=(3, 4, 4))
    _, info = tune_timesteps(model, SCHEDULE, "DPM-Solver++(3M)", 5, x, iterations=30, batch_size=16,
                             return_info=True)
    assert info.held_out_loss <= 0.5 * info.held_out_loss_start
    assert info.train_loss < info.train_loss_start


# ----------------------------------------------------------------------------------------------------------------
# theory

def test_point_mass_data_is_solved_exactly_on_every_grid():
    """ε is constant along the flow of δ_{x0}: DDIM, the pseudo methods and the exponential integrators are exact
    on any grid, so both the teacher and every student land on x0 and the loss stays at rounding level."""
    x0 = noise(1, seed=7)[0]
    model = PointMass(x0)
    x = noise(16, seed=8)
    assert (teacher_solve(model, SCHEDULE, x) - x0).abs().max() < 1e-12
    for name in ("DDIM", "UniPC-3(bh2)"):
        _, info = tune_timesteps(model, SCHEDULE, name, 5, x, iterations=5, batch_size=8, return_info=True)
        assert info.held_out_loss_start < 1e-13 and info.held_out_loss < 1e-13


def test_standard_normal_data_tunes_ddim_to_equal_angles():
    """Data N(0, I): the marginals are all N(0, I), ε = sqrt(1 − ā)·x and the flow is the identity (the
    teacher returns x_T). With sqrt(ā) = cos θ one DDIM step multiplies x by cos(θ − θ'), so N steps give
    Π cos(Δθ_i) with Σ Δθ_i = θ_T, largest (by concavity of log cos) for equal Δθ = θ_T/N: the tuned grid must
    be uniform in θ and its loss (1 − cos^N(θ_T/N))·(the same factor for every sample)."""
    model = GaussianMixture(torch.zeros(1, 2, 4), 1.0, schedule=SCHEDULE)
    x = noise(32, seed=9)
    assert (teacher_solve(model, SCHEDULE, x) - x).abs().max() < 1e-4  # measured 1.7e-5
    n = 4
    grid, info = tune_timesteps(model, SCHEDULE, "DDIM", n, x, reference=x, iterations=60, batch_size=8,
                                return_info=True)
    theta = [math.acos(math.sqrt(SCHEDULE.alpha_bar_lerp(t))) for t in grid]
    steps = [a - b for a, b in zip(theta, theta[1:])]
    gain = lambda th: math.prod(math.cos(a - b) for a, b in zip(th, th[1:]))  # noqa: E731
    start = gain([math.acos(math.sqrt(SCHEDULE.alpha_bar_lerp(t))) for t in info.start])
    best = math.cos(theta[0] / n) ** n
    assert max(steps) / min(steps) < 1.1
    assert info.held_out_loss >= (1 - best) / (1 - start) * info.held_out_loss_start * (1 - 1e-9)  # never below
    assert info.held_out_loss <= (1 - best) / (1 - start) * info.held_out_loss_start * 1.001  # and at the optimum


# ----------------------------------------------------------------------------------------------------------------
# determinism and bad inputs

def test_same_seed_same_grid_and_a_callback_per_iteration(mixture, problem):
    x, ref = problem
    calls = []
    run = lambda seed: tune_timesteps(mixture, SCHEDULE, "UniPC-2(bh2)", 5, x, reference=ref, iterations=4,  # noqa
                                      batch_size=8, seed=seed, callback=calls.append)
    assert run(3) == run(3)
    assert run(3) != run(4)
    assert [c["iteration"] for c in calls[:4]] == [1, 2, 3, 4]
    assert set(calls[0]) == {"iteration", "iterations", "start", "train_loss", "held_out_loss", "best_held_out_loss",
                             "grid"}
    assert calls[3]["best_held_out_loss"] <= min(c["held_out_loss"] for c in calls[:4])  # the start counts too


def test_a_race_of_starts_keeps_the_best_and_never_ends_above_any_raced_start(mixture, problem):
    x, ref = problem
    kwargs = dict(reference=ref, iterations=8, batch_size=8, seed=1, return_info=True)
    calls = []
    grid, info = tune_timesteps(mixture, SCHEDULE, "iPNDM", 6, x, race=3, callback=calls.append, **kwargs)
    ranked = sorted(info.start_losses, key=info.start_losses.get)[:3]
    assert set(info.raced) == set(ranked) and info.start_spacing == min(info.raced, key=info.raced.get)
    # 8 steps for the winner, 8 // 4 = 2 more for each of the two others; each start's race in one block, in rank order
    assert info.iterations == 12 and [c["iteration"] for c in calls] == list(range(1, 13))
    assert [c["start"] for c in calls] == [n for n in ranked for _ in range(2)] + [info.start_spacing] * 6
    assert all(c["iterations"] == 12 for c in calls)
    assert info.held_out_loss == min(c["best_held_out_loss"] for c in calls) <= min(info.raced.values())
    assert info.held_out_loss <= info.held_out_loss_start
    # race=1 (the default) is the plain descent from the lowest-loss start, bit for bit
    plain, plain_info = tune_timesteps(mixture, SCHEDULE, "iPNDM", 6, x, **kwargs)
    assert tune_timesteps(mixture, SCHEDULE, "iPNDM", 6, x, race=1, **kwargs)[0] == plain
    assert plain_info.raced == {} and plain_info.start_spacing == ranked[0] and plain_info.iterations == 8


def test_bad_inputs_are_one_line_value_errors(mixture, problem):
    x, ref = problem
    cases = {
        "too small": dict(method="F-PNDM", nfe=5),
        "race >= 1": dict(method="DDIM", nfe=5, race=0),
        "tune DDIM": dict(method="DDIM", nfe=1),
        "stochastic": dict(method="DDPM", nfe=10),
        "adaptive": dict(method="PF", nfe=10),
        "reference": dict(method="DDIM", nfe=5, reference=ref[:3]),
        "NaN reference": dict(method="DDIM", nfe=5,
                              reference=ref.clone().index_fill_(0, torch.tensor([1]), float("nan"))),
        "NaN noise": dict(method="DDIM", nfe=5, x_T=x.clone().index_fill_(0, torch.tensor([2]), float("inf"))),
        "loss": dict(method="DDIM", nfe=5, loss="l1"),
        "distance": dict(method="DDIM", nfe=5, distance=lambda a, b: (a - b).pow(2)),  # not one per sample
        "last": dict(method="DDIM", nfe=5, last=999.0),
        "nothing left": dict(method="DDIM", nfe=2, last=0.0),
        "start from below": dict(method="DDIM", nfe=3, start=[800.0, 400.0, 0.0, -1.0]),  # first not learned
        "few samples": dict(method="DDIM", nfe=5, x_T=x[:3], reference=ref[:3]),
        "round": dict(method="DDIM", nfe=5, model=lambda x_, t: mixture(x_, t.round())),
        "detach": dict(method="DDIM", nfe=5, model=lambda x_, t: mixture(x_, t.detach())),
        "no_grad": dict(method="DDIM", nfe=5, model=torch.no_grad()(lambda x_, t: mixture(x_, t))),
        # autograd cannot follow a model through numpy: was a RuntimeError traceback
        "numpy": dict(method="DDIM", nfe=5, model=lambda x_, t: mixture(torch.from_numpy(x_.numpy()), t)),
        # F-PNDM's Runge–Kutta warm-up evaluates ε at t = −1 (ā = 1), where a point mass divides by 0: NaN on
        # every start grid was an IndexError traceback from NaN timesteps
        "NaN on every grid": dict(method="F-PNDM", nfe=10, model=PointMass(torch.zeros(1, 2, 4))),
    }
    for what, kw in cases.items():
        kw = dict(dict(model=mixture, x_T=x, reference=ref), **kw)
        with pytest.raises(ValueError) as e:
            tune_timesteps(kw.pop("model"), SCHEDULE, kw.pop("method"), kw.pop("nfe"), kw.pop("x_T"),
                           iterations=1, **kw)
        assert one_line(e), what
        if what in ("round", "detach", "no_grad"):
            assert "not differentiable" in str(e.value)
        if what in ("NaN reference", "NaN noise"):
            assert "holds NaN or infinite values" in str(e.value)
        if what == "numpy":
            assert "differentiable in x and t" in str(e.value)
        if what == "NaN on every grid":
            assert "not finite on any start grid of F-PNDM" in str(e.value)


def test_grids_where_the_model_is_not_finite_are_avoided(mixture, problem):
    # ε is NaN whenever it is asked for at 600 < t < 700: the starts through that window are dropped, and the
    # grid returned never sits in it (its held-out loss there is inf, never the best)
    x, ref = problem

    def holey(x_, t):
        eps = mixture(x_, t)
        inside = (t > 600) & (t < 700)
        return torch.where(inside.reshape(-1, *[1] * (x_.ndim - 1)) if inside.ndim else inside, float("nan"), eps)

    grid, info = tune_timesteps(holey, SCHEDULE, "DDIM", 6, x, reference=ref, iterations=4, batch_size=8,
                                return_info=True)
    assert not any(600 < t < 700 for t in grid) and math.isfinite(info.held_out_loss)
    assert all(math.isfinite(v) for v in info.start_losses.values())
