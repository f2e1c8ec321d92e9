"""NCSN++ (`struc: PF_deep`) against the released network's outputs and checkpoint layout; FIR resampling against
its definition; every option combination builds and runs."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import inference
from models.inference import precision_supported, prepare_for_inference
from models.ncsnpp import NCSNpp
from models.ncsnpp_layers import AttnBlockpp
from models.upfirdn import (
    conv_downsample_2d, downsample_2d, fir_kernel, upfirdn2d, upsample_2d, upsample_conv_2d,
)
from runners.config import load_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
GOLDEN_CASES = ["pf_deep_ddpmpp", "pf_deep_ncsnpp_fir_residual", "pf_deep_ncsnpp_outputskip_fourier_cat"]


def _golden_model(case):
    net = NCSNpp.from_config(case["config"]).eval()
    net.load_state_dict(case["state_dict"], strict=True)
    return net


def _set_sdpa(net, flag):
    for module in net.modules():
        if isinstance(module, AttnBlockpp):
            module.use_sdpa = flag


def _small(**options):
    """An 8×8 network with two levels (attention at 4×4), small enough to build every variant quickly."""
    kwargs = dict(image_size=8, nf=8, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[4], dropout=0.0,
                  centered=True)
    return NCSNpp(**{**kwargs, **options}).eval()


# --- the released network ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("use_sdpa", [True, False], ids=["fused-sdpa", "explicit-softmax"])
@pytest.mark.parametrize("name", GOLDEN_CASES)
def test_reproduces_released_outputs(cases, name, use_sdpa):
    case = cases[name]
    net = _golden_model(case)
    assert sum(p.numel() for p in net.parameters()) == case["num_params"]
    assert list(net.state_dict()) == list(case["state_dict"])  # the same keys in the same order
    _set_sdpa(net, use_sdpa)
    with torch.no_grad():
        eps = net(case["x"], case["t"])
    assert eps.shape == case["eps"].shape and eps.dtype == torch.float32
    assert torch.allclose(eps, case["eps"], rtol=0, atol=1e-5), (eps - case["eps"]).abs().max()


def test_full_size_layout_equals_released_checkpoint(shapes):
    entry = shapes["cifar10_pf_deep"]
    with torch.device("meta"):
        net = NCSNpp.from_config(entry["config"])
    layout = {k: list(v.shape) for k, v in net.state_dict().items()}
    assert list(layout) == list(entry["state_dict_shapes"])  # same keys, same order
    assert layout == entry["state_dict_shapes"]
    assert sum(p.numel() for p in net.parameters()) == entry["num_params"] == 106_632_579
    assert net.config == entry["config"]


def test_shipped_config_is_the_released_layout(shapes):
    section = dict(load_config(CONFIG_DIR / "cifar10_pf_deep.yml")["Model"])
    assert section.pop("ckpt")
    assert section == shapes["cifar10_pf_deep"]["config"]


def test_float64_network_runs_in_float64(cases):
    case = cases["pf_deep_ncsnpp_outputskip_fourier_cat"]
    net = _golden_model(case).double()
    with torch.no_grad():
        eps = net(case["x"].double(), case["t"])  # t stays float32: the network casts what it needs
    assert eps.dtype == torch.float64
    assert torch.allclose(eps.float(), case["eps"], atol=1e-5)


@pytest.mark.parametrize("name", ["pf_deep_ddpmpp", "pf_deep_ncsnpp_fir_residual"])
def test_float64_matches_float32_for_any_timestep_dtype(cases, name):
    case = cases[name]
    net = _golden_model(case)
    with torch.no_grad():
        want = net(case["x"], case["t"])
        got = net.double()(case["x"].double(), case["t"].double())
    assert got.dtype == torch.float64 and torch.allclose(got.float(), want, atol=1e-5)


def test_scalar_timestep_broadcasts_over_batch(cases):
    case = cases["pf_deep_ddpmpp"]
    net = _golden_model(case)
    with torch.no_grad():
        assert torch.equal(net(case["x"], 411.5), net(case["x"], torch.full((3,), 411.5)))


def test_batch_rows_are_independent(cases):
    case = cases["pf_deep_ncsnpp_fir_residual"]
    net = _golden_model(case)
    with torch.no_grad():
        batch = net(case["x"], case["t"])
        single = net(case["x"][1:2], case["t"][1:2])
    assert torch.allclose(batch[1:2], single, atol=1e-5)


# --- attention ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("skip_rescale", [False, True])
def test_fused_attention_matches_explicit_softmax(skip_rescale):
    torch.manual_seed(0)
    block = AttnBlockpp(32, skip_rescale=skip_rescale, init_scale=1.0)
    x = torch.randn(2, 32, 6, 5)
    with torch.no_grad():
        fused = block(x)
        block.use_sdpa = False
        explicit = block(x)
    assert torch.allclose(fused, explicit, atol=1e-5)
    assert not torch.allclose(fused, x / 2 ** 0.5 if skip_rescale else x, atol=1e-3)  # attention did something


# --- every option -------------------------------------------------------------------------------------------------

RESBLOCKS = ["ddpm", "biggan"]
PROGRESSIVE = ["none", "output_skip", "residual"]
PROGRESSIVE_INPUT = ["none", "input_skip", "residual"]


def _grid():
    """resblock × progressive × progressive_input × fir in full; the embedding and the combine method alternate
    so that each meets both resblock types, both FIR settings and (for `cat`) the input-skip pyramid."""
    for rb in RESBLOCKS:
        for pr in PROGRESSIVE:
            for pi in PROGRESSIVE_INPUT:
                for fir in (False, True):
                    emb = ["positional", "fourier"][(PROGRESSIVE.index(pr) + fir) % 2]
                    comb = ["sum", "cat"][(RESBLOCKS.index(rb) + PROGRESSIVE.index(pr)) % 2]
                    yield pytest.param(rb, pr, pi, emb, comb, fir, id=f"{rb}-{pr}-{pi}-{emb}-{comb}-fir{int(fir)}")


@pytest.mark.parametrize("resblock_type, progressive, progressive_input, embedding_type, combine_method, fir",
                         list(_grid()))
def test_every_option_combination_builds_and_runs(resblock_type, progressive, progressive_input, embedding_type,
                                                  combine_method, fir):
    torch.manual_seed(0)
    options = dict(resblock_type=resblock_type, progressive=progressive, progressive_input=progressive_input,
                   embedding_type=embedding_type, combine_method=combine_method, fir=fir)
    net = _small(**options, init_scale=1.0)  # no near-zero output layers, so the output depends on everything
    x = torch.randn(2, 3, 8, 8)
    t = torch.tensor([0.3, 5.0]) if embedding_type == "fourier" else torch.tensor([3.0, 800.5])
    with torch.no_grad():
        eps = net(x, t)
        eps_other_t = net(x, t.flip(0))
    assert eps.shape == x.shape and torch.isfinite(eps).all()
    assert not torch.allclose(eps, eps_other_t)  # conditioned on t
    # the layout round-trips: a network built from its own config loads its weights strictly
    twin = NCSNpp.from_config(net.config).eval()
    twin.load_state_dict(net.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(twin(x, t), eps)


@pytest.mark.parametrize("options", [
    dict(conditional=False), dict(centered=False), dict(skip_rescale=False), dict(nonlinearity="elu"),
    dict(resamp_with_conv=False, resblock_type="ddpm"), dict(resamp_with_conv=False, resblock_type="ddpm", fir=True),
    dict(fir=True, fir_kernel=[1, 2, 1]), dict(num_res_blocks=2, ch_mult=[1, 2, 2], attn_resolutions=[8, 2]),
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_other_options_build_and_run(options):
    torch.manual_seed(0)
    net = _small(**{"init_scale": 1.0, **options})
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        eps = net(x, torch.tensor([3.0, 800.5]))
    assert eps.shape == x.shape and torch.isfinite(eps).all()


def test_unconditional_network_ignores_t():
    torch.manual_seed(0)
    net = _small(conditional=False, init_scale=1.0)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(net(x, torch.tensor([3.0, 5.0])), net(x, torch.tensor([700.0, 9.0])))


def test_scale_by_sigma_divides_by_the_fourier_input():
    torch.manual_seed(0)
    plain = _small(embedding_type="fourier", init_scale=1.0)
    scaled = _small(embedding_type="fourier", init_scale=1.0, scale_by_sigma=True)
    scaled.load_state_dict(plain.state_dict(), strict=True)
    x, sigma = torch.randn(2, 3, 8, 8), torch.tensor([0.5, 4.0])
    with torch.no_grad():
        assert torch.allclose(scaled(x, sigma), plain(x, sigma) / sigma[:, None, None, None])


# --- configuration ------------------------------------------------------------------------------------------------

def test_non_architecture_keys_are_ignored(cases):
    config = {**cases["pf_deep_ddpmpp"]["config"], "ckpt": "x.ckpt", "ema_rate": 0.9999, "ema": True,
              "var_type": "fixedlarge", "sigma_min": 0.01, "beta_max": 20.0, "normalization": "GroupNorm"}
    assert NCSNpp.from_config(config).config == cases["pf_deep_ddpmpp"]["config"]


@pytest.mark.parametrize("change, message", [
    ({"attn_resolution": [4]}, "attn_resolution"),
    ({"resblock_type": "resnet"}, "resblock_type must be one of"),
    ({"progressive": "input_skip"}, "progressive must be one of"),
    ({"progressive_input": "output_skip"}, "progressive_input must be one of"),
    ({"embedding_type": "learned"}, "embedding_type must be one of"),
    ({"combine_method": "max"}, "combine_method must be one of"),
    ({"nonlinearity": "gelu"}, "unknown nonlinearity"),
    ({"scale_by_sigma": True}, "scale_by_sigma with the positional embedding"),
    ({"embedding_type": "fourier", "continuous": False}, "continuous: true"),
    ({"attention_type": "legacy"}, "attention_type"),
    ({"image_size": 6}, "cannot be halved"),
])
def test_bad_configs_are_refused(cases, change, message):
    with pytest.raises(ValueError, match=message):
        NCSNpp.from_config({**cases["pf_deep_ddpmpp"]["config"], **change})


def test_centered_is_required(cases):
    config = dict(cases["pf_deep_ddpmpp"]["config"])
    del config["centered"]
    with pytest.raises(ValueError, match="centered"):
        NCSNpp.from_config(config)


def test_wrong_image_size_is_refused(cases):
    net = _golden_model(cases["pf_deep_ddpmpp"])
    with pytest.raises(ValueError, match="8×8"):
        net(torch.zeros(1, 3, 16, 16), torch.tensor([1.0]))


# --- inference fast path ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", GOLDEN_CASES)
def test_prepared_fp32_matches_the_model(cases, name):
    case = cases[name]
    net = _golden_model(case)
    eps = prepare_for_inference(net, "fp32")(case["x"], case["t"])
    with torch.no_grad():
        plain = net(case["x"], case["t"])
    assert eps.dtype == torch.float32 and eps.is_contiguous()
    assert torch.allclose(eps, plain, atol=1e-5)
    assert torch.allclose(eps, case["eps"], atol=1e-5)


@pytest.mark.parametrize("name", GOLDEN_CASES)
def test_prepared_bf16_is_close(cases, name):
    case = cases[name]
    net = _golden_model(case)
    if not precision_supported("bf16", "cpu"):
        pytest.skip("bf16 autocast is not available on this CPU build")
    eps = prepare_for_inference(net, "bf16")(case["x"], case["t"])
    assert eps.dtype == torch.float32
    error = ((eps - case["eps"]).norm() / case["eps"].norm()).item()
    assert 1e-5 < error < 3e-2  # it really ran in reduced precision, and stayed close


def test_prepared_compiled_network_is_one_graph(cases, monkeypatch):
    """torch.compile traces the whole network without a graph break (the eager backend keeps the test fast; the
    inductor backend itself is exercised by the DDPM UNet's compile test)."""
    case = cases["pf_deep_ncsnpp_outputskip_fourier_cat"]
    net = _golden_model(case)
    real_compile = torch.compile
    monkeypatch.setattr(inference.torch, "compile",
                        lambda module: real_compile(module, backend="eager", fullgraph=True))
    torch._dynamo.reset()
    eps = prepare_for_inference(net, "fp32", compile=True)
    assert torch.allclose(eps(case["x"], case["t"]), case["eps"], atol=1e-5)


# --- FIR resampling -----------------------------------------------------------------------------------------------

def _upfirdn2d_numpy(x, kernel, up, down, pad):
    """The definition, literally: zero insertion, zero padding (negative crops), correlation with the flipped
    kernel (valid), every down-th sample."""
    n, c, h, w = x.shape
    x0, x1, y0, y1 = pad
    upsampled = np.zeros((n, c, h * up, w * up))
    upsampled[:, :, ::up, ::up] = x
    padded = np.pad(upsampled, ((0, 0), (0, 0), (max(y0, 0), max(y1, 0)), (max(x0, 0), max(x1, 0))))
    padded = padded[:, :, max(-y0, 0):padded.shape[2] - max(-y1, 0), max(-x0, 0):padded.shape[3] - max(-x1, 0)]
    flipped = kernel[::-1, ::-1]
    kh, kw = kernel.shape
    out_h, out_w = padded.shape[2] - kh + 1, padded.shape[3] - kw + 1
    out = np.zeros((n, c, out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            out[:, :, i, j] = np.einsum("ncab,ab->nc", padded[:, :, i:i + kh, j:j + kw], flipped)
    return out[:, :, ::down, ::down]


@pytest.mark.parametrize("up, down, pad", [
    (1, 1, (0, 0, 0, 0)), (2, 1, (2, 1, 2, 1)), (1, 2, (1, 1, 1, 1)), (2, 2, (1, 2, 0, 3)),
    (3, 1, (0, 2, 1, 0)), (1, 3, (2, 2, 2, 2)), (2, 1, (-1, 2, 1, -1)),
])
def test_upfirdn2d_matches_its_definition(up, down, pad):
    rng = np.random.default_rng(up * 10 + down)
    x = rng.standard_normal((2, 3, 7, 6))
    kernel = rng.standard_normal((4, 3))  # asymmetric, non-square: a flip or transpose would show
    want = _upfirdn2d_numpy(x, kernel, up, down, pad)
    got = upfirdn2d(torch.from_numpy(x), torch.from_numpy(kernel), up=up, down=down, pad=pad)
    assert got.shape == want.shape
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)
    if pad[:2] == pad[2:]:  # (before, after) applies to both axes
        same = upfirdn2d(torch.from_numpy(x), torch.from_numpy(kernel), up=up, down=down, pad=pad[:2])
        assert torch.equal(same, got)


def test_upfirdn2d_follows_dtype_and_memory_layout():
    x = torch.randn(2, 4, 8, 8).to(memory_format=torch.channels_last)
    out = upfirdn2d(x, fir_kernel([1, 3, 3, 1]), up=2, pad=(2, 1))
    ref = upfirdn2d(x.contiguous().double(), fir_kernel([1, 3, 3, 1]), up=2, pad=(2, 1))
    assert out.dtype == torch.float32 and torch.allclose(out.double(), ref, atol=1e-6)


@pytest.mark.parametrize("taps", [[1, 1], [1, 2, 1], [1, 3, 3, 1], [1, 4, 6, 4, 1]])
def test_fir_resamplers_keep_constants_and_sizes(taps):
    kernel = fir_kernel(taps).double()
    assert abs(kernel.sum().item() - 1) < 1e-12
    ones = torch.ones(1, 2, 8, 8, dtype=torch.float64)
    up, down = upsample_2d(ones, kernel), downsample_2d(ones, kernel)
    assert up.shape[-2:] == (16, 16) and down.shape[-2:] == (4, 4)
    reach = len(taps)  # away from the zero-padded border a constant stays constant
    assert torch.allclose(up[..., reach:-reach, reach:-reach], torch.ones(()).double())
    inner = down[..., 1:-1, 1:-1] if len(taps) > 2 else down
    assert torch.allclose(inner, torch.ones(()).double())


@pytest.mark.parametrize("taps", [[1, 1], [1, 3, 3, 1], [1, 4, 6, 4, 1]])
def test_fused_convolutions_equal_resampling_then_convolving(taps):
    """Equal to the unfused pair computed on the image surrounded by zeros (no crop between the two steps)."""
    torch.manual_seed(0)
    kernel = fir_kernel(taps).double()
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    weight = torch.randn(5, 4, 3, 3, dtype=torch.float64)
    canvas = F.pad(x, (8, 8, 8, 8))
    up_ref = F.conv2d(upsample_2d(canvas, kernel), weight, padding=1)[..., 16:-16, 16:-16]
    down_ref = downsample_2d(F.conv2d(canvas, weight, padding=1), kernel)[..., 4:-4, 4:-4]
    assert torch.allclose(upsample_conv_2d(x, weight, kernel), up_ref, atol=1e-12)
    assert torch.allclose(conv_downsample_2d(x, weight, kernel), down_ref, atol=1e-12)
