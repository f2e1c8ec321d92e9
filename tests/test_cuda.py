"""The same golden numbers on a CUDA device (skipped where there is none; run them where a GPU is lent).

The samplers and UNets are written device-agnostically; these tests check that the claim survives a real GPU:
the released outputs within the CPU tolerances in float32, with cuDNN's TF32 convolutions switched off for the
exact checks (PyTorch enables TF32 convolutions by default on Ampere and newer, which costs ~1e-3 relative).
"""
import json

import numpy as np
import pytest
import torch

from models import GaussianMixture
from models.ddpm_unet import DDPMUNet
from models.iddpm_unet import IDDPMUNet
from models.inference import prepare_for_inference
from samplers import NoiseSchedule, sample

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

CUDA = torch.device("cuda")


def _golden_unet(reference_dir, which):
    golden = torch.load(reference_dir / f"{which}_unet_small.pt", weights_only=True)
    net = (DDPMUNet.from_config(golden["config"]) if which == "ddpm"
           else IDDPMUNet.from_config(golden["config"], eps_only=True))
    net.load_state_dict(golden["state_dict"], strict=True)
    return net.eval().to(CUDA), golden


@pytest.mark.parametrize("which", ["ddpm", "iddpm"])
def test_unet_reproduces_released_outputs_on_cuda(reference_dir, which):
    net, golden = _golden_unet(reference_dir, which)
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        eps = net(golden["x"].to(CUDA), golden["t"].to(CUDA)).cpu()
    assert torch.allclose(eps, golden["eps"], rtol=0, atol=1e-5), (eps - golden["eps"]).abs().max()


@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-5), ("bf16", 2e-2), ("fp16", 5e-3)])
def test_fast_path_on_cuda(reference_dir, precision, tolerance):
    net, golden = _golden_unet(reference_dir, "ddpm")
    eps_fn = prepare_for_inference(net, precision)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        eps = eps_fn(golden["x"].to(CUDA), golden["t"].to(CUDA)).cpu()
    relative = ((eps - golden["eps"]).norm() / golden["eps"].norm()).item()
    assert relative < tolerance, relative


def _cases(reference_dir):
    meta = json.loads((reference_dir / "pndm_samplers.json").read_text())
    return meta, np.load(reference_dir / "pndm_samplers.npz")


def test_every_golden_sampler_case_on_cuda(reference_dir):
    meta, arrays = _cases(reference_dir)
    checked = 0
    for case in meta["cases"]:
        if case["method"] == "PF":  # scipy's RK45 runs on the host whatever the device
            continue
        name = case["name"]
        schedule = NoiseSchedule(case["schedule"])
        model = GaussianMixture(arrays["mu"][None], meta["s2"], schedule=schedule)
        x_T = torch.from_numpy(arrays[f"{name}_xT"]).to(CUDA)
        x0, info = sample(model, x_T, schedule, method=case["method"], steps=case["sample_speed"],
                          convention=case["convention"], return_info=True)
        assert x0.device.type == "cuda" and info.nfe == case["nfe"], name
        np.testing.assert_allclose(x0.cpu().numpy(), arrays[f"{name}_x0"], atol=2e-4, rtol=0, err_msg=name)
        checked += 1
    assert checked == 18


@pytest.mark.parametrize("method", ["iPNDM", "DPM-Solver++(3M)", "UniPC-3(bh2)", "DEIS-3", "VS-PNDM-4"])
def test_newer_samplers_agree_between_cpu_and_cuda(method):
    schedule = NoiseSchedule("linear")
    model = GaussianMixture.random(4, (3, 8, 8), seed=1, schedule=schedule)
    x_T = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    on_cpu = sample(model, x_T, schedule, method=method, steps=10)
    on_cuda = sample(model, x_T.to(CUDA), schedule, method=method, steps=10).cpu()
    torch.testing.assert_close(on_cuda, on_cpu, atol=1e-5, rtol=0)


def test_per_sample_generators_on_cuda_are_batch_invariant():
    """DDPM noise drawn from CUDA generators: a sample does not depend on what else is in its batch."""
    schedule = NoiseSchedule("linear")
    model = GaussianMixture.random(4, (3, 8, 8), seed=2, schedule=schedule)
    x_T = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(3)).to(CUDA)

    def gens(seeds):
        return [torch.Generator(CUDA).manual_seed(s) for s in seeds]

    both = sample(model, x_T, schedule, method="DDPM", steps=20, generator=gens([10, 11, 12, 13]))
    last = sample(model, x_T[3:], schedule, method="DDPM", steps=20, generator=gens([13]))
    torch.testing.assert_close(both[3:], last, atol=1e-6, rtol=0)


def test_feature_network_runs_without_tf32_and_restores_the_settings():
    """FID features on the GPU: TF32 off inside the extractor whatever the caller set, the caller's settings back
    afterwards, the CPU's features within float32 rounding, and no dependence on the batch size."""
    from pathlib import Path

    from runners.features import build_extractor

    weights = Path(__file__).resolve().parents[1] / "models" / "weights" / "digits_classifier.pt"
    on_gpu, on_cpu = build_extractor("digits", str(weights), CUDA), build_extractor("digits", str(weights), "cpu")
    seen, real = [], on_gpu._features
    on_gpu._features = lambda x: seen.append((torch.backends.cuda.matmul.allow_tf32,
                                              torch.backends.cudnn.allow_tf32)) or real(x)
    images = torch.randint(0, 256, (150, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        features = on_gpu(images)
        assert set(seen) == {(False, False)}
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
    torch.testing.assert_close(features, on_cpu(images), atol=1e-5, rtol=1e-5)
    for batch in (1, 7, 64):
        pieces = torch.cat([on_gpu(images[lo:lo + batch]) for lo in range(0, len(images), batch)])
        assert torch.equal(pieces, features), batch
