"""The public entry point: names, errors, NFE accounting, grids, batch invariance, dtypes, callbacks."""
import math

import pytest
import torch

from models import GaussianMixture
from samplers import NoiseSchedule, available, expected_nfe, sample, uniform_grid

SCHEDULE = NoiseSchedule("linear")


@pytest.fixture(scope="module")
def model():
    return GaussianMixture.random(3, (2, 4, 4), seed=0, schedule=SCHEDULE)


def noise(n, seed=0, dtype=torch.float32):
    return torch.randn(n, 2, 4, 4, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_available_lists_the_paper_methods():
    assert {"DDIM", "S-PNDM", "F-PNDM", "FON", "PF", "DDPM"} <= set(available())


@pytest.mark.parametrize("name", ["f-pndm", "F-pndm", "s-PNDM", "ddim", "Fon"])
def test_method_names_case_insensitive(model, name):
    canonical = next(m for m in available() if m.upper() == name.upper())
    a = sample(model, noise(2), SCHEDULE, method=name, steps=10)
    b = sample(model, noise(2), SCHEDULE, method=canonical, steps=10)
    assert torch.equal(a, b)


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="RK45", steps=10), "unknown method 'RK45'.*DDIM"),
    (dict(method="DDIM", steps=10, convention="ddim"), "unknown convention 'ddim'.*standard.*official"),
    (dict(method="DDIM", steps=0), "at least 1"),
    (dict(method="DDIM", steps=1001), "exceeds"),
    (dict(method="DDIM", steps=2.5), "integer"),
    (dict(method="DDIM"), "needs steps"),
    (dict(method="PF", steps=10), "adaptive"),
    (dict(method="F-PNDM", steps=10, eta=0.5), "eta applies to DDIM only"),
    (dict(method="DDIM", steps=1000, convention="official"), "past the end.*convention='standard'"),
    (dict(method="DDIM", steps=333, convention="official"), "past the end"),
    (dict(method="DDIM@", steps=10), "names no spacing after '@'"),
    (dict(method="PF", t_end=1.0), r"t_end .* must lie in \(0, 1\), got 1.0"),
    (dict(method="PF", t_end=2.0), r"must lie in \(0, 1\)"),
    (dict(method="PF", t_end=float("nan")), r"must lie in \(0, 1\)"),
    (dict(method="PF", rtol=float("nan")), "rtol must be a positive finite number"),
    (dict(method="PF", rtol=0, atol=0), "rtol must be a positive finite number"),
    (dict(method="PF", atol=-1e-5), "atol must be a positive finite number"),
])
def test_bad_arguments_raise_value_error(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample(model, noise(1), SCHEDULE, **kwargs)


@pytest.mark.parametrize("method, kwargs", [("DDIM", dict(steps=3)), ("PF", {})])
def test_non_finite_noise_is_named_as_such_not_blamed_on_the_model(model, method, kwargs):
    x = noise(2)
    x[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="x_T holds NaN or infinite values"):
        sample(model, x, SCHEDULE, method, **kwargs)


def test_unknown_schedule_names_choices():
    with pytest.raises(ValueError, match="unknown schedule 'sigmoid'.*linear, quad, cosine"):
        NoiseSchedule("sigmoid")


def test_non_finite_eps_names_step_and_timestep(model):
    def broken(x, t):
        e = model(x, t)
        return e * float("nan") if t[0] < 500 else e

    with pytest.raises(FloatingPointError, match=r"step 6/10 \(timestep t=400\)"):
        sample(broken, noise(2), SCHEDULE, method="DDIM", steps=10)


def test_wrong_output_shape_is_reported(model):
    learned_sigma = lambda x, t: torch.cat([model(x, t), model(x, t)], dim=1)
    with pytest.raises(ValueError, match="expected ε with the input's shape"):
        sample(learned_sigma, noise(2), SCHEDULE, method="DDIM", steps=10)


@pytest.mark.parametrize("method, extra", [("DDIM", 0), ("S-PNDM", 1), ("F-PNDM", 9), ("FON", 9), ("DDPM", 0)])
@pytest.mark.parametrize("steps", [5, 10, 33, 50])
@pytest.mark.parametrize("convention", ["standard", "official"])
def test_nfe_accounting(model, method, extra, steps, convention):
    _, info = sample(model, noise(1), SCHEDULE, method=method, steps=steps, convention=convention,
                     generator=torch.Generator().manual_seed(0), return_info=True)
    n_steps = len(info.timesteps) - 1
    assert n_steps == (steps if convention == "standard" else len(range(0, 1000, 1000 // steps)))
    assert info.nfe == n_steps + extra == expected_nfe(method, steps, SCHEDULE, convention)
    assert len(info.model_timesteps) == info.nfe


def test_nfe_with_fewer_steps_than_warmup(model):
    # Runge-Kutta warm-up only runs for the steps that exist: 2 steps of F-PNDM cost 8 evaluations.
    _, info = sample(model, noise(1), SCHEDULE, method="F-PNDM", steps=2, return_info=True)
    assert info.nfe == 8 == expected_nfe("F-PNDM", 2, SCHEDULE)
    _, info = sample(model, noise(1), SCHEDULE, method="S-PNDM", steps=1, return_info=True)
    assert info.nfe == 2


def test_grids():
    assert uniform_grid(SCHEDULE, 10) == [900.0, 800.0, 700.0, 600.0, 500.0, 400.0, 300.0, 200.0, 100.0, 0.0, -1.0]
    assert len(uniform_grid(SCHEDULE, 33, "official")) - 1 == 34  # the released grid, range(0, 1000, 30)
    assert len(uniform_grid(SCHEDULE, 33, "standard")) - 1 == 33
    assert uniform_grid(SCHEDULE, 1000)[0] == 999.0


def test_conventions_differ_only_in_alpha_indexing():
    assert SCHEDULE.alpha_bar(-1, "standard") == 1.0
    assert SCHEDULE.alpha_bar(-1, "official") == pytest.approx(float(SCHEDULE.alphas_cumprod[0]))
    assert SCHEDULE.alpha_bar(417.5, "standard") == float(SCHEDULE.alphas_cumprod[417])
    assert SCHEDULE.alpha_bar(417.5, "official") == float(SCHEDULE.alphas_cumprod[418])


@pytest.mark.parametrize("method", ["DDIM", "S-PNDM", "F-PNDM", "FON", "PF"])
def test_batch_invariance(model, method):
    x = noise(5, seed=3)
    kw = {} if method == "PF" else {"steps": 20}
    together = sample(model, x, SCHEDULE, method=method, **kw)
    for i in (0, 3):
        alone = sample(model, x[i:i + 1], SCHEDULE, method=method, **kw)
        tol = 1e-4 if method == "PF" else 1e-6  # PF's adaptive steps depend on the whole state
        torch.testing.assert_close(alone[0], together[i], atol=tol, rtol=0)


def test_ancestral_batch_invariance_with_per_sample_generators(model):
    x = noise(4, seed=5)
    gens = lambda idx: [torch.Generator().manual_seed(100 + i) for i in idx]
    together = sample(model, x, SCHEDULE, method="DDPM", steps=50, generator=gens(range(4)))
    alone = sample(model, x[2:3], SCHEDULE, method="DDPM", steps=50, generator=gens([2]))
    torch.testing.assert_close(alone[0], together[2], atol=1e-6, rtol=0)
    again = sample(model, x, SCHEDULE, method="DDPM", steps=50, generator=gens(range(4)))
    assert torch.equal(together, again)


@pytest.mark.parametrize("method", ["DDIM", "S-PNDM", "F-PNDM", "FON", "PF", "DDPM"])
def test_float64_inputs(model, method):
    kw = {} if method == "PF" else {"steps": 20}
    g = lambda: torch.Generator().manual_seed(0)
    x64 = sample(model, noise(3, dtype=torch.float64), SCHEDULE, method=method, generator=g(), **kw)
    x32 = sample(model, noise(3, dtype=torch.float64).float(), SCHEDULE, method=method, generator=g(), **kw)
    assert x64.dtype == torch.float64
    # PF's adaptive step control reacts to float32 rounding; 1e-3 is its tolerance against the released code too
    torch.testing.assert_close(x64.float(), x32, atol=1e-3 if method == "PF" else 2e-4, rtol=0)


def test_callback_sees_every_step_and_running_nfe(model):
    seen = []
    sample(model, noise(2), SCHEDULE, method="F-PNDM", steps=10, callback=lambda s: seen.append(
        (s["step"], s["t"], s["t_next"], s["nfe"])))
    assert [s[0] for s in seen] == list(range(10))
    assert [s[3] for s in seen] == [4, 8, 12, 13, 14, 15, 16, 17, 18, 19]
    assert seen[0][1:3] == (900.0, 800.0) and seen[-1][1:3] == (0.0, -1.0)


def test_sampler_keeps_no_state_between_calls(model):
    a = sample(model, noise(2, seed=1), SCHEDULE, method="F-PNDM", steps=10)
    sample(model, noise(2, seed=2), SCHEDULE, method="F-PNDM", steps=20)
    b = sample(model, noise(2, seed=1), SCHEDULE, method="F-PNDM", steps=10)
    assert torch.equal(a, b)


def test_ddim_eta_zero_is_ddim_and_eta_adds_noise(model):
    g = lambda: torch.Generator().manual_seed(0)
    det = sample(model, noise(2), SCHEDULE, method="DDIM", steps=20)
    torch.testing.assert_close(sample(model, noise(2), SCHEDULE, method="DDIM", steps=20, eta=0.0), det)
    sto = sample(model, noise(2), SCHEDULE, method="DDIM", steps=20, eta=1.0, generator=g())
    assert not torch.allclose(sto, det, atol=1e-3)
    ddpm = sample(model, noise(2), SCHEDULE, method="DDPM", steps=20, generator=g())
    torch.testing.assert_close(sto, ddpm)


def test_ddpm_samples_the_data_distribution():
    """1000-step ancestral sampling of one Gaussian N(mu, s² I) reproduces its mean and variance."""
    mu = torch.linspace(-1, 1, 8).reshape(1, 2, 2, 2)
    model = GaussianMixture(mu.numpy(), 0.09, schedule=SCHEDULE)
    n = 4000
    x_T = torch.randn(n, 2, 2, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    x0 = sample(model, x_T, SCHEDULE, method="DDPM", steps=1000, generator=torch.Generator().manual_seed(8))
    z = (x0 - mu) / 0.3  # standardised: should be N(0, 1) per coordinate
    assert abs(z.mean().item()) < 4 / math.sqrt(z.numel())
    assert abs(z.var().item() - 1) < 0.05


@pytest.mark.parametrize("spacing", ["uniform", "power1.5", "quadratic", "logsnr", "karras"])
@pytest.mark.parametrize("steps", [1, 5, 20])
def test_spaced_grids_start_at_T_minus_1_and_end_at_data(spacing, steps):
    from samplers.grids import spaced_grid

    grid = spaced_grid(SCHEDULE, steps, spacing)
    assert len(grid) == steps + 1 and grid[0] == 999.0 and grid[-1] == -1.0
    assert all(a > b for a, b in zip(grid, grid[1:]))


def test_karras_and_logsnr_grids_follow_their_definitions():
    import numpy as np

    from samplers.grids import spaced_grid

    sigma = lambda t: np.sqrt((1 - SCHEDULE.alpha_bar_lerp(t)) / SCHEDULE.alpha_bar_lerp(t))
    ts = spaced_grid(SCHEDULE, 10, "logsnr")[:-1]
    np.testing.assert_allclose(np.diff(np.log([sigma(t) for t in ts])), np.log(sigma(ts[1]) / sigma(ts[0])),
                               rtol=1e-6)
    ts = spaced_grid(SCHEDULE, 10, "karras")[:-1]
    root = np.array([sigma(t) for t in ts]) ** (1 / 7)
    np.testing.assert_allclose(np.diff(root), root[1] - root[0], rtol=1e-6)


@pytest.mark.parametrize("spacing, power", [("uniform", 1.0), ("power1.5", 1.5), ("quadratic", 2.0)])
def test_power_grids_follow_their_definitions(spacing, power):
    from samplers.grids import spaced_grid

    n = 8
    expected = [999.0 * (1 - i / n) ** power for i in range(n)] + [-1.0]
    assert spaced_grid(SCHEDULE, n, spacing) == pytest.approx(expected, abs=1e-9)


def test_every_available_name_runs_with_exact_nfe(model):
    for name in available():
        kw = {} if name == "PF" else {"steps": 6}
        _, info = sample(model, noise(1), SCHEDULE, method=name, generator=torch.Generator().manual_seed(0),
                         return_info=True, **kw)
        if name != "PF":
            assert info.nfe == expected_nfe(name, 6, SCHEDULE), name


def test_grid_suffix_errors():
    with pytest.raises(ValueError, match="unknown spacing 'cosine'"):
        sample(lambda x, t: x, noise(1), SCHEDULE, method="iPNDM@cosine", steps=5)
    with pytest.raises(ValueError, match="standard convention only"):
        sample(lambda x, t: x, noise(1), SCHEDULE, method="DDIM@karras", steps=5, convention="official")
    with pytest.raises(ValueError, match="adaptive"):
        sample(lambda x, t: x, noise(1), SCHEDULE, method="PF@karras")


@pytest.mark.parametrize("method, spacing", [("UniPC-3(bh1)", "power1.5"), ("iPNDM", "logsnr"),
                                             ("F-PNDM", "quadratic"), ("DDIM", "karras")])
def test_own_timesteps_equal_the_named_grid(model, method, spacing):
    """timesteps= with a built-in grid's points runs exactly what NAME@spacing runs."""
    from samplers.grids import spaced_grid

    grid = spaced_grid(SCHEDULE, 8, spacing)
    named, info_named = sample(model, noise(3), SCHEDULE, f"{method}@{spacing}", steps=8, return_info=True)
    own, info = sample(model, noise(3), SCHEDULE, method, timesteps=grid, return_info=True)
    assert torch.equal(own, named)
    assert info.timesteps == grid and info.nfe == info_named.nfe == expected_nfe(method, None, SCHEDULE,
                                                                                  timesteps=grid)


def test_own_timesteps_stop_early_and_change_the_result(model):
    """A target ≥ 0 stops there (x at that noise level); another grid gives another sample."""
    x_mid = sample(model, noise(2), SCHEDULE, "DDIM", timesteps=[999, 600, 300])
    x_0 = sample(model, noise(2), SCHEDULE, "DDIM", timesteps=[999, 600, 300, -1])
    x_other = sample(model, noise(2), SCHEDULE, "DDIM", timesteps=[999, 500, 300, -1])
    assert not torch.allclose(x_mid, x_0) and not torch.allclose(x_0, x_other)
    # one DDIM step from 300 to -1 by hand, from the state the early stop returned
    ab = SCHEDULE.alpha_bar_lerp(300.0)
    eps = model(x_mid, torch.full((2,), 300.0))
    torch.testing.assert_close(x_0, (x_mid - (1 - ab) ** 0.5 * eps) / ab ** 0.5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="DDIM", timesteps=[999, 999, -1]), "strictly decreasing"),
    (dict(method="DDIM", timesteps=[1000, 500, -1]), "beyond"),
    (dict(method="DDIM", timesteps=[999, -1, -2]), ">= 0"),
    (dict(method="DDIM", timesteps=[999]), "at least 2"),
    (dict(method="DDIM", timesteps=[999, float("nan"), -1]), "finite"),
    (dict(method="DDIM", timesteps="abc"), "numbers"),
    (dict(method="DDIM", timesteps=[999, -1], steps=1), "not both"),
    (dict(method="DDIM@karras", timesteps=[999, -1]), "replaces the grid"),
    (dict(method="DDIM", timesteps=[999, -1], convention="official"), "standard convention"),
    (dict(method="PF", timesteps=[999, -1]), "adaptive"),
])
def test_bad_own_timesteps(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample(model, noise(1), SCHEDULE, **kwargs)


@pytest.mark.parametrize("method", ["UniPC-3(bh1)", "iPNDM", "DPM-Solver++(2M)", "F-PNDM"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_x_T_is_integrated_in_float32(method, dtype):
    # Cosine from t = T-1: x̂0 = (x - σε)/sqrt(ā) divides by 4.9e-5, so a solver state kept in half precision
    # ended 10-100 away from the same run in float64 (UniPC-3(bh1)). The model sees x in x_T's dtype.
    schedule = NoiseSchedule("cosine")
    mixture = GaussianMixture.random(3, (3, 4, 4), seed=2, schedule=schedule)
    seen = []

    def model(x, t):  # exact ε in float64, whatever the input's precision
        seen.append(x.dtype)
        return mixture(x.double(), t.double())

    x_T = torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(11)).to(dtype)
    out = sample(model, x_T, schedule, method, steps=10)
    want = sample(model, x_T.double(), schedule, method, steps=10)
    assert out.dtype == dtype and set(seen) == {dtype, torch.float64}
    # the result's own rounding to half precision is ~4e-3 (bf16) of values ~1
    assert (out.double() - want).abs().max() < 0.03


def test_pf_solver_failure_is_a_floating_point_error(model, monkeypatch):
    # scipy gives up when the step size falls below float spacing (a flow that blows up): that was a RuntimeError
    # the runner did not report as one line (a traceback, exit 1); now it is handled as a diverging model is.
    import types

    import samplers.probability_flow as pf

    def failing(fun, span, y0, **kw):
        fun(span[0], y0)
        return types.SimpleNamespace(success=False, t=[0.25], y=None,
                                     message="Required step size is less than spacing between numbers.")

    monkeypatch.setattr(pf, "solve_ivp", failing)
    with pytest.raises(FloatingPointError, match=r"PF: the ODE solver failed at s = 0.25 \(model timestep 249.8\)"):
        sample(model, noise(2), SCHEDULE, method="PF")
