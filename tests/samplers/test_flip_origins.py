"""runners.frontier.flips: the step that decided each flip, checked against the flow computed here step by step;
and scripts/bench_flips.py, which tabulates it."""
import re

import pytest
import torch

from models import GaussianMixture
from runners.frontier import MixtureSet
from runners.frontier.flips import flip_origins
from runners.frontier.scores import FLIP
from samplers import NoiseSchedule, plan, sample
from tests.conftest import load_script

SCHEDULE = NoiseSchedule("linear")


@pytest.fixture(scope="module")
def mixtures():
    """Mixtures 0 and 1 of the frontier, 16 noises each: UniPC-3(bh2) at 5 steps flips one sample in each."""
    return MixtureSet([0, 1], 16, SCHEDULE, noise_offset=1000)


def wrong(mixture, x, alpha_bar, exact):
    """Whether the exact flow from x (at noise level alpha_bar) ends in another component than ``exact``."""
    return float(((mixture.flow_endpoint(x, alpha_bar, 1.0) - exact) ** 2).mean().sqrt()) > FLIP


@pytest.mark.parametrize("method, kwargs", [("UniPC-3(bh2)", dict(steps=5)), ("DDIM", dict(steps=4)),
                                            ("iPNDM", dict(timesteps=[999, 700, 450, 200, 50, -1]))])
def test_each_flip_is_found_at_the_first_step_whose_state_flows_to_the_wrong_component(mixtures, method, kwargs):
    grid = plan(method, SCHEDULE, **kwargs).grid
    found_any = False
    for m, x in zip(mixtures.mixtures, mixtures.noises):
        x0, exact, origins = flip_origins(m, SCHEDULE, x, method, **kwargs)
        # the exact flow starts where the sampler does (DDIM's paper grid starts below T − 1)
        torch.testing.assert_close(exact, m.flow_endpoint(x, grid.alpha_bars[0], 1.0), rtol=0, atol=0)
        torch.testing.assert_close(x0, sample(m, x, SCHEDULE, method, **kwargs), rtol=0, atol=0)
        flipped = ((x0 - exact) ** 2).flatten(1).mean(1).sqrt() > FLIP
        assert [o["sample"] for o in origins] == flipped.nonzero().flatten().tolist()
        states = []
        sample(m, x, SCHEDULE, method, callback=lambda d: states.append(d["x"]), **kwargs)
        for o in origins:
            b, k = o["sample"], o["step"]
            assert 1 <= k <= len(grid.timesteps) - 1 and o["t"] == grid.timesteps[k]
            assert not wrong(m, x[b:b + 1], grid.alpha_bars[0], exact[b:b + 1])  # the start is on the right side
            if k > 1:  # the state before the deciding step still flows to the right component ...
                assert not wrong(m, states[k - 2][b:b + 1], grid.alpha_bars[k - 1], exact[b:b + 1])
            if k < len(states):  # ... and the state after it to the wrong one
                assert wrong(m, states[k - 1][b:b + 1], grid.alpha_bars[k], exact[b:b + 1])
            found_any = True
    assert found_any  # these cases do flip: the checks above ran


def test_a_single_component_never_flips():
    one = GaussianMixture(torch.zeros(1, 3, 4, 4), [0.1], schedule=SCHEDULE)
    x_T = torch.randn(32, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x0, exact, origins = flip_origins(one, SCHEDULE, x_T, "DDIM", steps=5)
    assert origins == [] and float(((x0 - exact) ** 2).flatten(1).mean(1).sqrt().max()) < FLIP


def test_an_adaptive_method_is_refused(mixtures):
    with pytest.raises(ValueError, match="fixed-step"):
        flip_origins(mixtures.mixtures[0], SCHEDULE, mixtures.noises[0], "PF")


def test_the_script_attributes_every_counted_flip_to_a_step(capsys):
    load_script("bench_flips").main(["origins", "--mixtures", "0-3", "--noises", "16", "--steps", "5"])
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| UniPC-3(bh2) | default")]
    cells = row[0].split("|")
    flips, by_step = int(cells[5]), cells[6]
    assert flips >= 1 and sum(int(n) for n in re.findall(r"step \d+: (\d+)", by_step)) == flips


def test_the_script_scores_each_loss_and_refuses_an_unknown_one(capsys):
    script = load_script("bench_flips")
    script.main(["losses", "--mixtures", "0", "--n-tune", "16", "--iterations", "1", "--noises", "8",
                 "--losses", "cap,cauchy"])
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if line.startswith("| UniPC-3(bh2) |")]
    assert [r[2].strip() for r in rows] == ["start", "cap", "cauchy"]
    assert all(0 < float(r[3]) < 10 and 0 < float(r[6]) < 10 for r in rows)
    with pytest.raises(SystemExit) as stop:
        script.main(["losses", "--losses", "mse,foo"])
    assert stop.value.code == 2 and "unknown loss 'foo'" in capsys.readouterr().err
