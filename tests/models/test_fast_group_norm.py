"""GroupNorm on channels-last CPU tensors (models.fast_group_norm) against torch's own GroupNorm."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.fast_group_norm import ChannelsLastGroupNorm, group_norm_nhwc, use_channels_last_group_norm
from models.iddpm_unet import GroupNorm32


def _channels_last(x):
    return x.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("shape, groups", [((5, 32, 8, 8), 32), ((3, 64, 4, 4), 32), ((2, 96, 6, 5), 32),
                                           ((4, 12, 3, 3), 3), ((2, 8, 1, 1), 4)])
@pytest.mark.parametrize("affine", [True, False])
def test_matches_torch_group_norm_in_float64_and_float32(shape, groups, affine):
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * 3 + 2  # an offset: the variance is two-pass
    c = shape[1]
    w, b = (torch.randn(c, generator=gen, dtype=torch.float64), torch.randn(c, generator=gen, dtype=torch.float64)) \
        if affine else (None, None)
    want = F.group_norm(x, groups, w, b, 1e-6)
    got = group_norm_nhwc(_channels_last(x), groups, w, b, 1e-6)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(got, want, rtol=0, atol=1e-12)  # the same function: only rounding differs
    got32 = group_norm_nhwc(_channels_last(x.float()), groups, None if w is None else w.float(),
                            None if b is None else b.float(), 1e-6)
    assert (got32.double() - want).abs().max() < 2e-5


def test_the_wrapper_takes_the_fast_path_only_for_float32_channels_last():
    torch.manual_seed(0)
    norm = nn.GroupNorm(4, 8, eps=1e-5)
    nn.init.normal_(norm.weight), nn.init.normal_(norm.bias)
    wrapped = ChannelsLastGroupNorm(norm)
    x = torch.randn(2, 8, 5, 5)
    assert torch.equal(wrapped(x), norm(x))  # NCHW: torch's own kernel, bit for bit
    half = _channels_last(x).to(torch.bfloat16)
    assert torch.equal(wrapped(half), norm(half))  # not float32: torch's own kernel
    fast = wrapped(_channels_last(x))
    assert fast.is_contiguous(memory_format=torch.channels_last) and not fast.is_contiguous()
    assert torch.allclose(fast, norm(x), atol=1e-5)


def test_subclasses_keep_their_dtype_rules():
    """iDDPM's GroupNorm32 computes half-precision inputs in float32: the wrapper hands those to it."""
    norm = GroupNorm32(32)
    wrapped = ChannelsLastGroupNorm(norm)
    x = _channels_last(torch.randn(2, 32, 4, 4)).to(torch.bfloat16)
    assert torch.equal(wrapped(x), norm(x))


def test_every_group_norm_of_a_model_is_wrapped_and_the_output_kept():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.GroupNorm(32, 32),
                        nn.Sequential(nn.SiLU(), nn.Conv2d(32, 64, 3, padding=1), GroupNorm32(64)))
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        want = net(x)
        fast = use_channels_last_group_norm(net.to(memory_format=torch.channels_last))
        got = fast(_channels_last(x))
    assert sum(isinstance(m, ChannelsLastGroupNorm) for m in fast.modules()) == 2
    assert not any(isinstance(m, nn.GroupNorm) and not isinstance(p, ChannelsLastGroupNorm)
                   for p in fast.modules() for m in p.children())
    assert torch.allclose(got, want, atol=1e-5)
