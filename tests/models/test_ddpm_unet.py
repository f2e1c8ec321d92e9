"""The DDPM UNet against the released implementation's outputs and the released checkpoints' layouts."""
import json
import math

import numpy as np
import pytest
import torch

from models.ddpm_unet import AttnBlock, DDPMUNet, ddpm_timestep_embedding

RELEASED_DDPM = ["cifar10", "celeba", "lsun_church", "lsun_bedroom"]


@pytest.fixture(scope="module")
def golden(reference_dir):
    return torch.load(reference_dir / "ddpm_unet_small.pt", weights_only=True)


@pytest.fixture(scope="module")
def shapes(reference_dir):
    return json.loads((reference_dir / "ddpm_unet_checkpoint_shapes.json").read_text())


@pytest.fixture(scope="module")
def model(golden):
    net = DDPMUNet.from_config(golden["config"]).eval()
    net.load_state_dict(golden["state_dict"], strict=True)
    return net


def _set_sdpa(net, flag):
    for module in net.modules():
        if isinstance(module, AttnBlock):
            module.use_sdpa = flag


@pytest.mark.parametrize("use_sdpa", [True, False], ids=["fused-sdpa", "explicit-softmax"])
def test_reproduces_released_outputs(golden, model, use_sdpa):
    _set_sdpa(model, use_sdpa)
    try:
        with torch.no_grad():
            eps = model(golden["x"], golden["t"])
    finally:
        _set_sdpa(model, True)
    assert eps.shape == golden["eps"].shape
    assert torch.allclose(eps, golden["eps"], rtol=0, atol=1e-5), (eps - golden["eps"]).abs().max()


@pytest.mark.parametrize("name", RELEASED_DDPM)
def test_state_dict_layout_equals_released_checkpoint(shapes, name):
    entry = shapes[name]
    with torch.device("meta"):
        net = DDPMUNet.from_config(entry["config"])
    layout = {k: list(v.shape) for k, v in net.state_dict().items()}
    assert list(layout) == list(entry["state_dict_shapes"])  # same keys, same order
    assert layout == entry["state_dict_shapes"]
    assert sum(p.numel() for p in net.parameters()) == entry["num_params"]


def test_cifar10_has_35_746_307_parameters(shapes):
    with torch.device("meta"):
        net = DDPMUNet.from_config(shapes["cifar10"]["config"])
    assert sum(p.numel() for p in net.parameters()) == 35_746_307


def test_timestep_embedding_is_sin_cos_with_half_minus_one_frequencies():
    t = torch.tensor([0.0, 1.5, 417.0, 973.5, 999.0])
    dim = 32
    half = dim // 2
    freqs = np.exp(-math.log(10000) * np.arange(half) / (half - 1))
    args = t.double().numpy()[:, None] * freqs[None, :]
    expected = np.concatenate([np.sin(args), np.cos(args)], axis=1)
    got = ddpm_timestep_embedding(t, dim).double().numpy()
    # float32 arguments up to ~1000 rad carry ~1e-4 rad of rounding
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-4)


def test_fractional_timesteps_are_not_rounded(golden, model):
    x = golden["x"][:1]
    with torch.no_grad():
        at_973 = model(x, torch.tensor([973.0]))
        at_973_5 = model(x, torch.tensor([973.5]))
        at_974 = model(x, torch.tensor([974.0]))
    assert not torch.allclose(at_973_5, at_973, atol=1e-6)
    assert not torch.allclose(at_973_5, at_974, atol=1e-6)
    # a smooth network: the midpoint output lies close to the mean of its neighbours
    assert torch.allclose(at_973_5, (at_973 + at_974) / 2, atol=1e-2)


def test_scalar_timestep_broadcasts_over_batch(golden, model):
    x = golden["x"]
    with torch.no_grad():
        per_row = model(x, torch.full((x.shape[0],), 417.0))
        scalar = model(x, 417.0)
    assert torch.equal(per_row, scalar)


def test_batch_rows_are_independent(golden, model):
    with torch.no_grad():
        batch = model(golden["x"], golden["t"])
        single = model(golden["x"][1:2], golden["t"][1:2])
    assert torch.allclose(batch[1:2], single, atol=1e-5)


def test_wrong_image_size_is_refused(golden, model):
    with pytest.raises(ValueError, match="16×16"):
        model(torch.zeros(1, 3, 32, 32), torch.tensor([1.0]))


def test_unknown_config_key_is_refused(golden):
    with pytest.raises(ValueError, match="attn_resolution"):
        DDPMUNet.from_config({**golden["config"], "attn_resolution": [8]})
