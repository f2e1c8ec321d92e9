"""The improved-diffusion UNet against the released implementation's outputs and the CIFAR-10 cosine layout."""
import json
import math

import numpy as np
import pytest
import torch

from models.iddpm_unet import AttentionBlock, IDDPMUNet, iddpm_timestep_embedding


@pytest.fixture(scope="module")
def golden(reference_dir):
    return torch.load(reference_dir / "iddpm_unet_small.pt", weights_only=True)


def _build(golden, **kwargs):
    net = IDDPMUNet.from_config({**golden["config"], "image_size": golden["image_size"]}, **kwargs).eval()
    net.load_state_dict(golden["state_dict"], strict=True)
    return net


@pytest.mark.parametrize("use_sdpa", [True, False], ids=["fused-sdpa", "explicit-softmax"])
def test_eps_half_reproduces_released_outputs(golden, use_sdpa):
    net = _build(golden, eps_only=True)
    for module in net.modules():
        if isinstance(module, AttentionBlock):
            module.use_sdpa = use_sdpa
    with torch.no_grad():
        eps = net(golden["x"], golden["t"])
    assert eps.shape == golden["eps"].shape == golden["x"].shape
    assert torch.allclose(eps, golden["eps"], rtol=0, atol=1e-5), (eps - golden["eps"]).abs().max()


def test_full_output_carries_eps_then_variance(golden):
    net = _build(golden, eps_only=False)
    assert net.learns_sigma
    with torch.no_grad():
        out = net(golden["x"], golden["t"])
    assert out.shape == (3, 6, 16, 16)
    assert torch.allclose(out[:, :3], golden["eps"], atol=1e-5)
    assert not torch.allclose(out[:, 3:], golden["eps"], atol=1e-2)


def test_state_dict_layout_equals_released_cifar10_cosine_checkpoint(reference_dir):
    entry = json.loads((reference_dir / "ddpm_unet_checkpoint_shapes.json").read_text())["cifar10_iddpm"]
    with torch.device("meta"):
        net = IDDPMUNet.from_config(entry["config"])
    layout = {k: list(v.shape) for k, v in net.state_dict().items()}
    assert list(layout) == list(entry["state_dict_shapes"])
    assert layout == entry["state_dict_shapes"]
    assert sum(p.numel() for p in net.parameters()) == entry["num_params"] == 52_546_438


def test_timestep_embedding_is_cos_sin_with_half_frequencies():
    t = torch.tensor([0.0, 2.25, 417.0, 999.0])
    dim = 32
    half = dim // 2
    freqs = np.exp(-math.log(10000) * np.arange(half) / half)
    args = t.double().numpy()[:, None] * freqs[None, :]
    expected = np.concatenate([np.cos(args), np.sin(args)], axis=1)
    np.testing.assert_allclose(iddpm_timestep_embedding(t, dim).double().numpy(), expected, rtol=0, atol=2e-4)


def test_timestep_rescaling_maps_T_steps_onto_1000(golden):
    """A 4000-step model trained with rescale_timesteps sees t·1000/4000: index 4t must give the output at t."""
    net = _build(golden, eps_only=True, timestep_scale=1000 / 4000)
    with torch.no_grad():
        eps = net(golden["x"], golden["t"] * 4)
    assert torch.allclose(eps, golden["eps"], atol=1e-5)


def test_num_heads_upsample_minus_one_means_num_heads(golden):
    config = {**golden["config"], "num_heads_upsample": -1}
    net = IDDPMUNet.from_config(config, eps_only=True).eval()
    net.load_state_dict(golden["state_dict"], strict=True)
    assert all(m.num_heads == config["num_heads"] for m in net.modules() if isinstance(m, AttentionBlock))
    with torch.no_grad():
        assert torch.allclose(net(golden["x"], golden["t"]), golden["eps"], atol=1e-5)


def test_gradient_checkpointing_changes_nothing_but_memory(golden):
    plain = _build(golden).train()
    ckpt = IDDPMUNet.from_config({**golden["config"], "use_checkpoint": True}).train()
    ckpt.load_state_dict(golden["state_dict"])
    grads = []
    x, t = golden["x"][1:], golden["t"][1:]
    for net in (plain, ckpt):
        out = net(x, t)
        out.square().mean().backward()
        grads.append((out.detach(), net.time_embed[0].weight.grad.clone()))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-6)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-6)
    assert grads[0][1].abs().sum() > 0
