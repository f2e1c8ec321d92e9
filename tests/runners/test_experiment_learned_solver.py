"""scripts/experiment_learned_solver.py: the learned scheme starts as DPM-Solver++(2M) and stays consistent."""
import importlib.util
import re
import sys

import pytest
import torch

from models import load_model
from runners.config import load_config
from samplers import NoiseSchedule, sample
from tests.conftest import REPO


@pytest.fixture(scope="module")
def script():
    sys.path.insert(0, str(REPO / "scripts"))  # the script imports bench_tuning as its own sibling
    spec = importlib.util.spec_from_file_location("experiment_learned_solver",
                                                  REPO / "scripts" / "experiment_learned_solver.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass resolves annotations through sys.modules
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name)
    sys.path.remove(str(REPO / "scripts"))


@pytest.fixture(scope="module")
def digits():
    cfg = load_config(REPO / "configs" / "digits.yml")
    net = load_model(cfg, REPO / "models" / "weights" / "digits_ddpm_ema.pt").double()
    return net, NoiseSchedule.from_config(cfg["Schedule"])


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("grid", [[999.0, 644.4, 369.6, 154.0, 41.5, -1.0], [999.0, 500.0, -1.0], [999.0, -1.0]])
def test_zero_coefficients_are_dpm_solver_2m(script, digits, grid, affine):
    net, schedule = digits
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        ours = script.learned_solve(net, schedule, grid, script.Coefficients.zeros(len(grid) - 1, 3), x,
                                    use_affine=affine)
        library = sample(net, x, schedule, script.BASE, timesteps=grid)
    torch.testing.assert_close(ours, library, rtol=0, atol=1e-12)


def test_constant_data_prediction_is_exact_for_any_coefficients(script):
    """Point-mass data: x̂0 = c everywhere, so every difference m_k − m_i vanishes and the scheme must return c
    whatever its coefficients. (A network-time shift is not covered: it evaluates ε at another noise level than
    the data prediction assumes, on purpose — the time-shift samplers' correction of exposure bias.)"""
    schedule = NoiseSchedule.from_config({"type": "linear", "beta_start": 1e-4, "beta_end": 0.02, "diffusion_step": 1000})
    c = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def model(x, t):
        ab = schedule.alpha_bar_lerp_torch(t).view(-1, 1, 1, 1)
        return (x - ab.sqrt() * c) / (1 - ab).sqrt()

    grid = [999.0, 700.0, 400.0, 150.0, 30.0, -1.0]
    gen = torch.Generator().manual_seed(1)
    zeros = script.Coefficients.zeros(5, 3)
    coef = script.Coefficients(torch.randn(*zeros.predictor.shape, generator=gen, dtype=torch.float64),
                               torch.randn(*zeros.corrector.shape, generator=gen, dtype=torch.float64), zeros.shift,
                               zeros.x_scale, zeros.m_scale)
    x = torch.randn(4, 2, 4, 4, generator=gen, dtype=torch.float64)
    out = script.learned_solve(model, schedule, grid, coef, x)
    torch.testing.assert_close(out, c.expand_as(out), rtol=0, atol=1e-10)
    # and a non-constant model does see the coefficients (the test above is not vacuous)
    plain = script.learned_solve(lambda x, t: torch.tanh(x), schedule, grid, script.Coefficients.zeros(5, 3), x)
    moved = script.learned_solve(lambda x, t: torch.tanh(x), schedule, grid, coef, x)
    assert (plain - moved).abs().max() > 1e-3


def test_affine_scales_act_only_when_asked(script):
    """--affine's per-step scales change the result when non-zero, and are ignored without use_affine."""
    schedule = NoiseSchedule("linear")
    grid = [999.0, 600.0, 200.0, -1.0]
    zeros = script.Coefficients.zeros(3, 3)
    scaled = script.Coefficients(zeros.predictor, zeros.corrector, zeros.shift,
                                 torch.full((3,), 0.05, dtype=torch.float64), torch.full((3,), -0.1, dtype=torch.float64))
    x = torch.randn(4, 2, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    model = lambda x, t: torch.tanh(x)  # noqa: E731
    plain = script.learned_solve(model, schedule, grid, zeros, x, use_affine=True)
    torch.testing.assert_close(script.learned_solve(model, schedule, grid, scaled, x), plain, rtol=0, atol=0)
    assert (script.learned_solve(model, schedule, grid, scaled, x, use_affine=True) - plain).abs().max() > 1e-2


def test_cli_prints_a_row(script, capsys):
    script.main(["--nfe", "3", "--iterations", "2", "--n-tune", "24", "--holdout", "8", "--batch-size", "8",
                 "--n-test", "8", "--eval-every", "1", "--any-methods", "DDIM", "--threads", "1", "--affine"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 3 |")]
    assert len(rows) == 1
    numbers = [float(v) for v in re.findall(r"\d\.\d\de[+-]\d\d", rows[0])]
    assert len(numbers) == 3 and all(0 < v < 10 for v in numbers)
