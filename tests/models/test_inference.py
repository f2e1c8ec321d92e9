"""The inference fast path agrees with the plain models (and the released outputs) at each precision."""
import pytest
import torch

from models import inference
from models.ddpm_unet import DDPMUNet
from models.iddpm_unet import IDDPMUNet
from models.inference import precision_supported, prepare_for_inference


@pytest.fixture(scope="module")
def ddpm(reference_dir):
    golden = torch.load(reference_dir / "ddpm_unet_small.pt", weights_only=True)
    net = DDPMUNet.from_config(golden["config"]).eval()
    net.load_state_dict(golden["state_dict"], strict=True)
    return net, golden


@pytest.fixture(scope="module")
def iddpm(reference_dir):
    golden = torch.load(reference_dir / "iddpm_unet_small.pt", weights_only=True)
    net = IDDPMUNet.from_config(golden["config"], eps_only=True).eval()
    net.load_state_dict(golden["state_dict"], strict=True)
    return net, golden


def _relative_error(got, want):
    return ((got.float() - want).norm() / want.norm()).item()


@pytest.mark.parametrize("which", ["ddpm", "iddpm"])
def test_fp32_matches_plain_model_and_released_outputs(request, which):
    net, golden = request.getfixturevalue(which)
    eps = prepare_for_inference(net, "fp32")(golden["x"], golden["t"])
    with torch.no_grad():
        plain = net(golden["x"], golden["t"])
    assert eps.dtype == torch.float32 and eps.is_contiguous()
    assert torch.allclose(eps, plain, atol=1e-4)
    assert torch.allclose(eps, golden["eps"], atol=1e-4)


@pytest.mark.parametrize("which", ["ddpm", "iddpm"])
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_within_two_percent(request, which, precision):
    net, golden = request.getfixturevalue(which)
    if not precision_supported(precision, "cpu"):
        with pytest.raises(ValueError, match=f"{precision} is not supported"):
            prepare_for_inference(net, precision)
        return
    eps = prepare_for_inference(net, precision)(golden["x"], golden["t"])
    assert eps.dtype == golden["x"].dtype
    error = _relative_error(eps, golden["eps"])
    assert error < 2e-2
    assert error > 1e-5  # it really ran in reduced precision


def test_the_callers_model_is_left_alone(ddpm):
    net, golden = ddpm
    before = {k: v.clone() for k, v in net.state_dict().items()}
    prepare_for_inference(net, "bf16")(golden["x"], golden["t"])
    for key, value in net.state_dict().items():
        assert value.dtype == torch.float32 and value.is_contiguous() and torch.equal(value, before[key])
    with torch.no_grad():
        assert torch.allclose(net(golden["x"], golden["t"]), golden["eps"], atol=1e-5)


def test_unknown_and_unsupported_precisions_are_refused(ddpm, monkeypatch):
    net, _ = ddpm
    with pytest.raises(ValueError, match="precision must be one of"):
        prepare_for_inference(net, "fp8")
    monkeypatch.setattr(inference, "precision_supported", lambda precision, device: precision == "fp32")
    with pytest.raises(ValueError, match="fp16 is not supported on cpu"):
        prepare_for_inference(net, "fp16")


def test_compiled_network_matches_plain_model():
    torch.manual_seed(0)
    net = DDPMUNet(ch=32, out_ch=3, ch_mult=[1], num_res_blocks=1, attn_resolutions=[8], image_size=8).eval()
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([3.0, 500.5])
    eps = prepare_for_inference(net, "fp32", compile=True)
    with torch.no_grad():
        assert torch.allclose(eps(x, t), net(x, t), atol=1e-4)


@pytest.mark.parametrize("channels_last, expected", [(None, True), (True, True), (False, False)])
def test_memory_layout_is_channels_last_on_the_cpu_unless_asked_otherwise(ddpm, channels_last, expected):
    """On the CPU channels-last is the default (1.14× in fp32); on CUDA it is not (0.83×, docs/PERFORMANCE.md)."""
    net, golden = ddpm
    eps = prepare_for_inference(net, "fp32", channels_last=channels_last)
    conv = next(m for m in eps.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert eps.channels_last is expected
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) is expected
    assert torch.allclose(eps(golden["x"], golden["t"]), golden["eps"], atol=1e-4)
