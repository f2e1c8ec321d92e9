"""Both UNets run in the dtype of their weights whatever the dtype of t: a float64 network (for a
high-accuracy reference solve) takes the float32 timesteps the samplers pass, and agrees with the float32 one."""
import copy

import pytest
import torch

from models import DDPMUNet, IDDPMUNet


def _ddpm():
    return DDPMUNet(ch=32, out_ch=3, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[4], image_size=8)


def _iddpm():
    return IDDPMUNet(in_channels=3, model_channels=32, out_channels=6, num_res_blocks=1, attention_resolutions=[2],
                     channel_mult=[1, 2], num_heads=2, image_size=8, eps_only=True)


NETS = [_ddpm, _iddpm]
TIMESTEPS = {"float32": torch.tensor([3.0, 517.5]), "float64": torch.tensor([3.0, 517.5], dtype=torch.float64),
             "int64": torch.tensor([3, 517])}


def _relative_error(got, want):
    return ((got.double() - want.double()).norm() / want.double().norm()).item()


@pytest.fixture(scope="module", params=NETS, ids=lambda f: f.__name__.strip("_"))
def nets(request):
    """A random float32 network and its float64 copy (same weights)."""
    torch.manual_seed(0)
    net = request.param().eval()
    return net, copy.deepcopy(net).double()


@pytest.mark.parametrize("t_dtype", list(TIMESTEPS))
def test_float64_network_agrees_with_float32(nets, t_dtype):
    net32, net64 = nets
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    t = TIMESTEPS[t_dtype]
    with torch.no_grad():
        out64 = net64(x.double(), t)
        out32 = net32(x, t)
    assert out64.dtype == torch.float64 and torch.isfinite(out64).all()
    assert out32.dtype == torch.float32
    assert _relative_error(out32, out64) < 1e-5


def test_bfloat16_network_runs(nets):
    net32, _ = nets
    net16 = copy.deepcopy(net32).bfloat16()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = net16(x.bfloat16(), TIMESTEPS["float32"])
        want = net32(x, TIMESTEPS["float32"])
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert _relative_error(out, want) < 5e-2
