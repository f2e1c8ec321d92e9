"""NoiseSchedule against diffusers' independent implementation and its own continuous extension."""
import numpy as np
import pytest

from samplers import NoiseSchedule

DIFFUSERS_NAME = {"linear": "linear", "quad": "scaled_linear", "cosine": "squaredcos_cap_v2"}


@pytest.mark.parametrize("kind", ["linear", "quad", "cosine"])
def test_betas_match_diffusers(kind):
    from diffusers import DDPMScheduler

    ours = NoiseSchedule(kind)
    theirs = DDPMScheduler(num_train_timesteps=1000, beta_schedule=DIFFUSERS_NAME[kind])
    np.testing.assert_allclose(ours.betas, theirs.betas.numpy(), rtol=1e-6, atol=0)
    np.testing.assert_allclose(ours.alphas_cumprod, theirs.alphas_cumprod.numpy(), rtol=1e-5, atol=0)


def test_from_config_and_unknown_key():
    s = NoiseSchedule.from_config({"type": "quad", "beta_start": 1e-4, "beta_end": 0.02, "diffusion_step": 500})
    assert (s.kind, s.T) == ("quad", 500)
    with pytest.raises(ValueError, match="unknown Schedule key.*'steps'"):
        NoiseSchedule.from_config({"type": "linear", "steps": 10})


@pytest.mark.parametrize("section, message", [
    ({"diffusion_step": 1000.7}, "num_timesteps must be an integer, got 1000.7"),  # was quietly 1000
    ({"diffusion_step": "10"}, "num_timesteps must be an integer"),
    ({"diffusion_step": True}, "num_timesteps must be an integer"),
    ({"type": "linear", "beta_end": 0.7}, "alpha_bar underflows to 0 in float32 from timestep"),
    # improved-diffusion's key for the schedule was accepted and ignored: a cosine model sampled as linear
    ({"type": "linear", "noise_schedule": "cosine"}, "noise_schedule is 'cosine' but Schedule.type is 'linear'"),
    ({"noise_schedule": "cosine", "type": "quad"}, "give one schedule"),
    ({"noise_schedule": "linear", "diffusion_step": 4000}, "rescaled schedule"),
])
def test_schedules_that_cannot_be_meant_are_refused(section, message):
    with pytest.raises(ValueError, match=message):
        NoiseSchedule.from_config(section)


def test_noise_schedule_alone_names_the_schedule():
    assert NoiseSchedule.from_config({"noise_schedule": "cosine"}).kind == "cosine"
    assert NoiseSchedule.from_config({"noise_schedule": "linear", "type": "linear"}).kind == "linear"
    assert NoiseSchedule.from_config({"noise_schedule": "linear", "diffusion_step": 4000, "beta_start": 2.5e-5,
                                      "beta_end": 5e-3}).T == 4000


@pytest.mark.parametrize("value", ["0.0001", None, True])
def test_beta_start_must_be_a_number(value):
    with pytest.raises(ValueError, match="beta_start must be a number"):
        NoiseSchedule(beta_start=value)


def test_an_integral_float_step_count_is_that_integer():
    assert NoiseSchedule(num_timesteps=500.0).T == 500 == len(NoiseSchedule(num_timesteps=500).alphas_cumprod)


@pytest.mark.parametrize("kind", ["linear", "quad", "cosine"])
def test_vp_beta_is_minus_derivative_of_vp_log_alpha_bar(kind):
    s = NoiseSchedule(kind)
    for u in (0.01, 0.3, 0.7, 0.95):
        h = 1e-6
        numeric = -(s.vp_log_alpha_bar(u + h) - s.vp_log_alpha_bar(u - h)) / (2 * h)
        assert s.vp_beta(u) == pytest.approx(numeric, rel=1e-5)


@pytest.mark.parametrize("kind", ["linear", "quad", "cosine"])
def test_vp_process_tracks_the_table(kind):
    """ā(s = (t+1)/T) of the continuous process is the table's ā_t up to O(1/T) discretisation."""
    s = NoiseSchedule(kind)
    t = np.arange(0, 900, 50)
    cont = np.array([s.vp_log_alpha_bar((i + 1) / s.T) for i in t])
    np.testing.assert_allclose(cont, np.log(s.alphas_cumprod[t]), rtol=0.02, atol=2e-3)


def test_interpolation_hits_the_table_at_integers():
    s = NoiseSchedule("linear")
    np.testing.assert_array_equal(s.alpha_bar_lerp_clamped([0, 417, 999]), s.alphas_cumprod[[0, 417, 999]])
    mid = s.alpha_bar_lerp_clamped(417.5)
    assert s.alphas_cumprod[418] < mid < s.alphas_cumprod[417]
