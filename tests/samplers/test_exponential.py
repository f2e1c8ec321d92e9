"""DPM-Solver++, UniPC, DEIS and the variable-step Adams method (samplers/exponential.py).

* Agreement with diffusers' DPMSolverMultistepScheduler / UniPCMultistepScheduler / DEISMultistepScheduler on the
  same integer grid (diffusers' ``scheduler.timesteps``), diffusers in float32, ours in float64, tolerance 1e-4.
  Full trajectories are compared on grids that end at t = 0 (``final_sigmas_type='sigma_min'``, our grid
  timesteps + [0.0]) with ``lower_order_final=False``: there both run every step at full order.
  With ``final_sigmas_type='zero'`` (to ā = 1) diffusers always takes a first-order final step (x̂0 of the last
  point); ours extrapolates the data predictions to σ = 0 (module docstring), so there the trajectories are
  compared up to the last grid point, diffusers' final value is checked to be x̂0 there, and a separate test shows
  the extrapolated final step is the more accurate one. Things diffusers cannot be configured to match:
  - its 3M update weights the second difference by half the Taylor coefficient (a second-order method, see
    ``test_third_order_dpm_solver_pp_beats_the_official_3m``); ``_dpm_solver_pp(official_3m=True)`` reproduces it;
  - UniPC with 'zero' needs lower_order_final=True (higher orders give inf at σ = 0), which also lowers the
    second-to-last step to order 2, so 'zero' is compared for orders 1-2; with 'bh1' diffusers returns NaN at
    σ = 0 (B(h) = h = ∞), so 'zero' is compared for 'bh2' only;
  - DEISMultistepScheduler has no σ = 0 option (it always ends at t = 0).
* Order of convergence on the analytic Gaussian mixture against its exact flow from t = 999 to ā = 1, on grids
  uniform in λ rounded to integer timesteps. UniPC with corrector is one order above its predictor order.
* NFE = number of steps; reductions to DDIM and to PNDM's Adams-Bashforth weights; argument checks.
"""
import functools
import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from models import GaussianMixture
from runners.frontier.diffusers_side import run_scheduler
from samplers import NoiseSchedule
from samplers.exponential import _G, _dpm_solver_pp, _g, _phi, deis, dpm_solver_pp, unipc, variable_step_adams
from samplers.grids import make_grid
from samplers.multistep import linear_multistep

SCHEDULE = NoiseSchedule("linear")
alpha_bar = functools.partial(SCHEDULE.alpha_bar, convention="standard")


def on(timesteps, ab=alpha_bar):
    """The grid over these timesteps with ā from the table (standard convention) or ``ab``."""
    return make_grid(timesteps, ab)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The analytic model's tensors are tiny, so torch's intra-op threads only add contention: on a busy 2-core
    machine its softmax over a (16, 3) tensor took 8 ms with 2 threads and 2 µs with one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def eps_of(model):
    return lambda x, t: model(x, torch.full((x.shape[0],), t, dtype=x.dtype))


def method(name, order, variant=None):
    """A sampler with the engine signature f(eps, grid, x, callback=None)."""
    if name == "dpm_solver_pp":
        return functools.partial(dpm_solver_pp, order=order)
    if name == "official_3m":
        return functools.partial(_dpm_solver_pp, order=order, official_3m=True)
    if name == "unipc":
        return functools.partial(unipc, order=order, variant=variant)
    if name == "deis":
        return functools.partial(deis, order=order)
    return functools.partial(variable_step_adams, order=order)


ALL = [("dpm_solver_pp", o, None) for o in (1, 2, 3)] + [("unipc", o, v) for v in ("bh1", "bh2") for o in (1, 2, 3)] \
    + [("deis", o, None) for o in (1, 2, 3)] + [("variable_step_adams", o, None) for o in (1, 2, 3, 4)]


def trajectory(f, model, x, grid):
    states = []
    f(eps_of(model), on(grid), x, callback=lambda i, t, t_next, y: states.append(y))
    return states


def data_prediction(model, x, t):
    ab = alpha_bar(t)
    return (x - math.sqrt(1 - ab) * eps_of(model)(x, t)) / math.sqrt(ab)


# ----------------------------------------------------------------------------------------------------------------
# diffusers

@pytest.fixture(scope="module")
def parity_model():
    return GaussianMixture.random(3, (3, 4, 4), seed=2, schedule=SCHEDULE)


def x_T(n=4, dtype=torch.float64):
    return torch.randn(n, 3, 4, 4, generator=torch.Generator().manual_seed(11)).to(dtype)


def run_diffusers(scheduler, model, steps):
    """diffusers' trajectory in float32 (the shared driver, runners.frontier.diffusers_side.run_scheduler): (its
    timesteps, [x after each step])."""
    states = []
    run_scheduler(scheduler, model, x_T(dtype=torch.float32), steps, callback=lambda t, x: states.append(x))
    return [float(t) for t in scheduler.timesteps], states


def assert_same(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b.to(a.dtype), atol=1e-4, rtol=0)


GRIDS = [("linspace", 10), ("leading", 20), ("trailing", 20)]


@pytest.mark.parametrize("spacing, steps", GRIDS)
@pytest.mark.parametrize("order", [1, 2, 3])
def test_dpm_solver_pp_matches_diffusers(parity_model, spacing, steps, order):
    from diffusers import DPMSolverMultistepScheduler

    sched = DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=order, solver_type="midpoint",
                                        lower_order_final=False, final_sigmas_type="sigma_min",
                                        timestep_spacing=spacing)
    ts, theirs = run_diffusers(sched, parity_model, steps)
    f = method("official_3m" if order == 3 else "dpm_solver_pp", order)
    assert_same(trajectory(f, parity_model, x_T(), ts + [0.0]), theirs)


@pytest.mark.parametrize("spacing, steps", GRIDS)
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_unipc_matches_diffusers(parity_model, spacing, steps, variant, order):
    from diffusers import UniPCMultistepScheduler

    sched = UniPCMultistepScheduler(solver_order=order, solver_type=variant, lower_order_final=False,
                                    final_sigmas_type="sigma_min", timestep_spacing=spacing)
    ts, theirs = run_diffusers(sched, parity_model, steps)
    assert_same(trajectory(method("unipc", order, variant), parity_model, x_T(), ts + [0.0]), theirs)


@pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning")  # diffusers' np.log on torch scalars
@pytest.mark.parametrize("spacing, steps", GRIDS)
@pytest.mark.parametrize("order", [1, 2, 3])
def test_deis_matches_diffusers(parity_model, spacing, steps, order):
    from diffusers import DEISMultistepScheduler

    sched = DEISMultistepScheduler(solver_order=order, lower_order_final=False, timestep_spacing=spacing)
    ts, theirs = run_diffusers(sched, parity_model, steps)
    assert_same(trajectory(method("deis", order), parity_model, x_T(), ts + [0.0]), theirs)


@pytest.mark.parametrize("name, order, variant", [("dpm_solver_pp", 1, None), ("dpm_solver_pp", 2, None),
                                                  ("official_3m", 3, None), ("unipc", 1, "bh2"),
                                                  ("unipc", 2, "bh2")])
def test_final_step_to_data_against_diffusers(parity_model, name, order, variant):
    """final_sigmas_type='zero': same trajectory up to the last grid point; diffusers then returns x̂0 there."""
    import diffusers

    if name == "unipc":
        sched = diffusers.UniPCMultistepScheduler(solver_order=order, solver_type=variant, final_sigmas_type="zero")
    else:
        sched = diffusers.DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=order,
                                                      lower_order_final=False, final_sigmas_type="zero")
    ts, theirs = run_diffusers(sched, parity_model, 10)
    ours = trajectory(method(name, order, variant), parity_model, x_T(), ts + [-1.0])
    assert_same(ours[:-1], theirs[:-1])
    torch.testing.assert_close(data_prediction(parity_model, ours[-2], ts[-1]), theirs[-1].double(), atol=1e-4,
                               rtol=0)
    if order == 1 and name != "unipc":
        torch.testing.assert_close(ours[-1], theirs[-1].double(), atol=1e-4, rtol=0)


@pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning")
@pytest.mark.parametrize("spacing", ["linspace", "trailing"])
@pytest.mark.parametrize("name, order, variant", [("dpm_solver_pp", 2, None), ("official_3m", 3, None),
                                                  ("unipc", 2, "bh1"), ("unipc", 3, "bh2"), ("deis", 3, None)])
def test_cosine_schedule_from_t_max_matches_diffusers_in_float64(name, order, variant, spacing):
    """The cosine schedule ('squaredcos_cap_v2') from t = 999, where ā = 2.4e-9: the data prediction divides by
    sqrt(ā) = 4.9e-5, so float32 rounding moves the first steps by ~1e-3 (diffusers keeps its tables in float32).
    In float64, with diffusers' tables promoted, both run the same algorithm to 1e-6."""
    import diffusers

    schedule = NoiseSchedule("cosine")
    model = GaussianMixture.random(3, (3, 4, 4), seed=2, schedule=schedule)
    common = dict(beta_schedule="squaredcos_cap_v2", solver_order=order, lower_order_final=False,
                  timestep_spacing=spacing)
    if name == "unipc":
        sched = diffusers.UniPCMultistepScheduler(solver_type=variant, final_sigmas_type="sigma_min", **common)
    elif name == "deis":
        sched = diffusers.DEISMultistepScheduler(**common)
    else:
        sched = diffusers.DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_type="midpoint",
                                                      final_sigmas_type="sigma_min", **common)
    table = torch.from_numpy(schedule.alphas_cumprod.astype(np.float64))
    sched.alphas_cumprod, sched.alpha_t, sched.sigma_t = table, table.sqrt(), (1 - table).sqrt()
    sched.lambda_t = sched.alpha_t.log() - sched.sigma_t.log()
    sched.set_timesteps(10)
    sched.sigmas = sched.sigmas.double()
    assert float(sched.timesteps[0]) == 999
    theirs = []
    run_scheduler(sched, model, x_T(), callback=lambda t, x: theirs.append(x))  # timesteps set above
    ours = []
    method(name, order, variant)(eps_of(model), on([float(t) for t in sched.timesteps] + [0.0],
                                                   functools.partial(schedule.alpha_bar, convention="standard")),
                                 x_T(), callback=lambda i, t, t_next, y: ours.append(y))
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------------------------------------------
# accuracy on the analytic model

@pytest.fixture(scope="module")
def smooth_model():
    """Components wide enough (variance 0.2-0.5) that 20-80 steps are in the asymptotic regime; with the default
    narrow components (0.02-0.2) the same grids are pre-asymptotic (observed slopes 1.5-2.2 for every method)."""
    return GaussianMixture.random(3, (3, 4, 4), seed=1, schedule=SCHEDULE, variance_range=(0.2, 0.5))


@pytest.fixture(scope="module")
def start(smooth_model):
    x = torch.randn(16, 3, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return x, smooth_model.flow_endpoint(x, alpha_bar(999.0), 1.0)


def rmse(a, b):
    return ((a - b) ** 2).mean().sqrt().item()


def logsnr_grid(steps, t_start=999):
    """Integer timesteps whose λ = log(α/σ) is uniform from t_start to 0 (rounded, deduplicated), then -1."""
    ab = SCHEDULE.alphas_cumprod.astype(np.float64)
    lam = 0.5 * np.log(ab / (1 - ab))  # decreasing in t
    target = np.linspace(lam[t_start], lam[0], steps + 1)
    ts = np.interp(target, lam[::-1], np.arange(len(ab), dtype=np.float64)[::-1])
    return [float(t) for t in sorted({int(round(v)) for v in ts}, reverse=True)] + [-1.0]


STEPS = (20, 40, 80)
# observed order: UniPC's corrector adds one to its predictor order
EXPECTED = {("unipc", o, v): o + 1 for v in ("bh1", "bh2") for o in (1, 2, 3)}
LOWER_BOUND = {2: 1.7, 3: 2.5, 4: 3.2}


@pytest.fixture(scope="module")
def convergence(smooth_model, start):
    x, exact = start
    grids = [logsnr_grid(n) for n in STEPS]
    out = {"steps": [len(g) - 1 for g in grids]}
    for key in ALL + [("official_3m", 3, None)]:
        f = method(*key)
        out[key] = [rmse(f(eps_of(smooth_model), on(g), x), exact) for g in grids]
    return out


def _slope(steps, errors):
    return -np.polyfit(np.log(steps), np.log(errors), 1)[0]


@pytest.mark.parametrize("key", ALL, ids=lambda k: "-".join(str(v) for v in k if v is not None))
def test_order_of_convergence(convergence, key):
    expected = EXPECTED.get(key, key[1])
    slope = _slope(convergence["steps"], convergence[key])
    if expected == 1:
        assert 0.85 < slope < 1.2, slope
    else:
        assert slope > LOWER_BOUND[expected], slope


def test_third_order_dpm_solver_pp_beats_the_official_3m(convergence):
    """diffusers'/the released code's 3M halves the second-difference term (second order); ours is exact for
    quadratics. On 20-80 steps both slopes are still pre-asymptotic, so compare the errors: >2x at 80 steps."""
    ours, official = convergence["dpm_solver_pp", 3, None], convergence["official_3m", 3, None]
    assert official[-1] > 2 * ours[-1]
    assert all(o < f for o, f in zip(ours[1:], official[1:]))


@pytest.mark.parametrize("name, order, variant", [("dpm_solver_pp", 2, None), ("dpm_solver_pp", 3, None),
                                                  ("unipc", 2, "bh2"), ("unipc", 3, "bh1"), ("deis", 2, None),
                                                  ("deis", 3, None)])
def test_extrapolated_final_step_beats_first_order(smooth_model, start, name, order, variant):
    """On diffusers' 20-step linspace grid the last step runs from t = 50 to data; the first-order final step
    (x̂0 of the last point, what diffusers does) leaves an error the extrapolation in ρ² removes."""
    from diffusers import DPMSolverMultistepScheduler

    sched = DPMSolverMultistepScheduler(timestep_spacing="linspace")
    sched.set_timesteps(20)
    grid = [float(t) for t in sched.timesteps] + [-1.0]
    x, _ = start
    exact = smooth_model.flow_endpoint(x, alpha_bar(grid[0]), 1.0)
    states = trajectory(method(name, order, variant), smooth_model, x, grid)
    first_order = data_prediction(smooth_model, states[-2], grid[-2])
    assert rmse(states[-1], exact) < 0.7 * rmse(first_order, exact)


# ----------------------------------------------------------------------------------------------------------------
# structure

@pytest.mark.parametrize("key", ALL, ids=lambda k: "-".join(str(v) for v in k if v is not None))
@pytest.mark.parametrize("grid", [[999.0, -1.0], [999.0, 500.0, -1.0], [900.0, 700.0, 500.0, 300.0, 100.0, 0.0],
                                  [float(t) for t in range(900, -1, -100)] + [-1.0]])
def test_one_model_evaluation_per_step(parity_model, key, grid):
    calls = []

    def counting(x, t):
        calls.append(t)
        return eps_of(parity_model)(x, t)

    steps = []
    out = method(*key)(counting, on(grid), x_T(2), callback=lambda i, t, tn, y: steps.append((i, t, tn)))
    assert calls == grid[:-1]
    assert steps == [(i, grid[i], grid[i + 1]) for i in range(len(grid) - 1)]
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("f", [method("dpm_solver_pp", 1), method("deis", 1), method("variable_step_adams", 1)])
def test_order_one_is_ddim(parity_model, f):
    grid = [float(t) for t in range(999, 0, -111)] + [-1.0]
    ddim = linear_multistep(eps_of(parity_model), on(grid), x_T(), family="pseudo", order=1)
    torch.testing.assert_close(f(eps_of(parity_model), on(grid), x_T()), ddim, atol=1e-10, rtol=0)


@pytest.mark.parametrize("order", [2, 3, 4])
def test_adams_on_a_grid_uniform_in_rho_is_pndm_linear_multistep(parity_model, order):
    """With ρ = σ/α linear in t the variable-step weights are the classical Adams-Bashforth ones, i.e. PNDM's
    pseudo linear multistep (with lower-order warm-up)."""
    ab = lambda t: 1.0 / (1.0 + (0.05 * (t + 1.0)) ** 2)  # noqa: E731
    eps = lambda x, t: parity_model.eps_at(x, ab(t))  # noqa: E731
    grid = [float(t) for t in range(899, -2, -60)]  # 899, 839, ..., 59, -1: uniform in ρ to the end
    pndm = linear_multistep(eps, on(grid, ab), x_T(), family="pseudo", order=order, warmup="lower_order")
    ours = variable_step_adams(eps, on(grid, ab), x_T(), order=order)
    torch.testing.assert_close(ours, pndm, atol=1e-10, rtol=0)


def test_float32_and_no_state(parity_model):
    grid = [float(t) for t in range(900, -1, -100)] + [-1.0]
    for key in ALL:
        f = method(*key)
        x32 = f(eps_of(parity_model), on(grid), x_T(dtype=torch.float32))
        x64 = f(eps_of(parity_model), on(grid), x_T())
        assert x32.dtype == torch.float32
        torch.testing.assert_close(x32.double(), x64, atol=1e-4, rtol=0)
        assert torch.equal(f(eps_of(parity_model), on(grid), x_T()), x64)


def test_phi_and_moments():
    for j in range(1, 5):
        for z in (-0.4999, -0.5, 0.4999, 0.5):  # the switch between series and recurrence
            assert _phi(j, z) == pytest.approx(_phi(j, math.copysign(0.5, z)), rel=1e-3)
    for n in range(4):
        for h in (1e-3, 0.3, 2.0, 9.0):
            exact_g = quad(lambda tau: math.exp(-(h - tau)) * (tau / h) ** n, 0, h, epsabs=0, epsrel=1e-13)[0]
            exact_G = quad(lambda tau: math.exp(h - tau) * (tau / h) ** n, 0, h, epsabs=0, epsrel=1e-13)[0]
            assert _g(n, h) == pytest.approx(exact_g, rel=1e-11)
            assert _G(n, h) == pytest.approx(exact_G, rel=1e-11)


def test_bad_arguments(parity_model):
    e, x = eps_of(parity_model), x_T(1)
    with pytest.raises(ValueError, match="order must be between 1 and 3"):
        dpm_solver_pp(e, on([999.0, -1.0]), x, order=4)
    with pytest.raises(ValueError, match="order must be between 1 and 4"):
        variable_step_adams(e, on([999.0, -1.0]), x, order=5)
    with pytest.raises(ValueError, match="integer"):
        deis(e, on([999.0, -1.0]), x, order=2.5)
    with pytest.raises(ValueError, match="unknown UniPC variant 'bh3'"):
        unipc(e, on([999.0, -1.0]), x, order=2, variant="bh3")
    with pytest.raises(ValueError, match="increase"):
        dpm_solver_pp(e, on([500.0, 500.0, -1.0]), x, order=2)
    with pytest.raises(ValueError, match="at least two"):
        deis(e, on([-1.0]), x, order=1)
    with pytest.raises(ValueError, match="only the final target"):
        unipc(e, on([999.0, -1.0, -1.0]), x, order=2, variant="bh2")
