"""The release's score-SDE networks through the jobs: a tiny PF (score-SDE DDPM) and a tiny PF_deep (NCSN++ with FIR
resampling) sample with F-PNDM and with the adaptive PF solver, and train with an exact resume."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from main import main

from .conftest import REPO

TINY = {
    "PF": {"struc": "PF", "image_size": 8, "num_channels": 1, "nf": 32, "ch_mult": [1, 2], "num_res_blocks": 1,
           "attn_resolutions": [4], "dropout": 0.1, "nonlinearity": "swish", "resamp_with_conv": True,
           "conditional": True, "centered": True},
    "PF_deep": {"struc": "PF_deep", "image_size": 8, "num_channels": 1, "nf": 16, "ch_mult": [1, 2],
                "num_res_blocks": 1, "attn_resolutions": [4], "dropout": 0.1, "nonlinearity": "swish",
                "resamp_with_conv": True, "conditional": True, "skip_rescale": True, "resblock_type": "biggan",
                "progressive": "none", "progressive_input": "residual", "embedding_type": "positional",
                "init_scale": 0.0, "combine_method": "sum", "fir": True, "fir_kernel": [1, 3, 3, 1],
                "continuous": True, "centered": True, "fourier_scale": 16, "scale_by_sigma": False},
}


def write_config(folder: Path, struc: str) -> Path:
    """A tiny network of ``struc`` with random weights (every parameter redrawn, so zero-initialised output layers
    carry signal), saved as the release's plain state dict, and a digits config around it."""
    from models import build_model

    torch.manual_seed(0)
    model = build_model({"Model": TINY[struc]})
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    ckpt = folder / f"{struc}.pt"
    torch.save(model.state_dict(), ckpt)
    cfg = {
        "Schedule": {"type": "linear", "beta_start": 1e-4, "beta_end": 0.02, "diffusion_step": 1000},
        "Dataset": {"dataset": "DIGITS", "image_size": 8, "channels": 1, "num_workers": 0},
        "Model": {**TINY[struc], "ckpt": str(ckpt)},
        "Train": {"loss_type": "linear", "batch_size": 32, "ema_rate": 0.9, "ema": True, "snapshot_freq": 3,
                  "log_freq": 1, "seed": 0},
        "Optim": {"optimizer": "adam", "lr": 1e-3, "grad_clip": 1.0},
        "Sample": {"batch_size": 4, "seed": 0},
        "FID": {"stats": str(REPO / "models/weights/digits_fid_stats.npz"), "extractor": "digits",
                "extractor_weights": str(REPO / "models/weights/digits_classifier.pt")},
    }
    path = folder / f"{struc}.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("struc", ["PF", "PF_deep"])
def test_sample_with_f_pndm_and_pf(struc, tmp_path):
    cfg = write_config(tmp_path, struc)
    for method, extra, nfe in (("F-PNDM", ["--steps", "4"], 13), ("PF", [], None)):
        out = tmp_path / method
        assert main(["sample", "--config", str(cfg), "--out", str(out), "--method", method, *extra,
                     "--num-samples", "3", "--device", "cpu", "--threads", "1"]) == 0
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["status"] == "complete" and len(list(out.glob("*.png"))) == 3
        assert manifest["nfe"] == nfe if nfe else manifest["nfe"] > 20  # PF: the adaptive solver's count


@pytest.mark.parametrize("struc", ["PF", "PF_deep"])
def test_train_resumes_exactly(struc, tmp_path):
    from models import load_model

    cfg = write_config(tmp_path, struc)
    base = ["train", "--config", str(cfg), "--device", "cpu", "--threads", "1"]
    assert main(base + ["--workdir", str(tmp_path / "straight"), "--max-steps", "6"]) == 0
    assert main(base + ["--workdir", str(tmp_path / "resumed"), "--max-steps", "3"]) == 0
    assert main(base + ["--workdir", str(tmp_path / "resumed"), "--max-steps", "6", "--resume"]) == 0
    a = torch.load(tmp_path / "straight/checkpoints/last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed/checkpoints/last.pt", weights_only=True)
    assert a["step"] == b["step"] == 6
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    # the EMA weights it writes load as a checkpoint of the same structure
    model = load_model(yaml.safe_load(cfg.read_text()), tmp_path / "straight/checkpoints/ema.pt")
    assert type(model).__name__ == ("ScoreSDEDDPM" if struc == "PF" else "NCSNpp")


def test_fourier_embedding_networks_are_refused(tmp_path, capsys):
    """A Fourier-embedding NCSN++ takes σ, not a VP timestep label: sampling it here would be silently wrong."""
    cfg = write_config(tmp_path, "PF_deep")
    data = yaml.safe_load(cfg.read_text())
    data["Model"]["embedding_type"] = "fourier"
    cfg.write_text(yaml.safe_dump(data))
    assert main(["sample", "--config", str(cfg), "--out", str(tmp_path / "o"), "--method", "DDIM", "--steps", "3",
                 "--num-samples", "2", "--device", "cpu"]) == 2
    assert "take σ of the VE SDE" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_uncentered_networks_write_their_0_1_samples_as_images(tmp_path):
    """A score-SDE network with centered: false maps its input to 2x − 1 itself: its samples live in [0, 1]."""
    from models import load_model
    from runners.images import to_uint8
    from runners.sampling import initial_noise
    from samplers import NoiseSchedule, sample

    x = torch.tensor([0.0, 0.25, 0.5, 1.0])
    assert to_uint8(x, centered=False).tolist() == to_uint8(2 * x - 1).tolist() == [0, 64, 128, 255]
    cfg = write_config(tmp_path, "PF")
    data = yaml.safe_load(cfg.read_text())
    data["Model"]["centered"] = False
    cfg.write_text(yaml.safe_dump(data))
    assert main(["sample", "--config", str(cfg), "--out", str(tmp_path / "o"), "--method", "DDIM", "--steps", "3",
                 "--num-samples", "2", "--device", "cpu"]) == 0
    model = load_model(data, data["Model"]["ckpt"])
    with torch.no_grad():
        x0 = sample(model, initial_noise([0], (1, 8, 8), 0), NoiseSchedule("linear"), "DDIM", steps=3)
    written = np.asarray(Image.open(tmp_path / "o" / "000000.png"))
    assert np.array_equal(written, to_uint8(2 * x0 - 1)[0, 0].numpy())


@pytest.mark.parametrize("struc", ["PF", "PF_deep"])
def test_every_method_runs_on_the_network_with_its_exact_nfe(struc, tmp_path):
    from models import load_model
    from samplers import NoiseSchedule, available, expected_nfe, sample

    data = yaml.safe_load(write_config(tmp_path, struc).read_text())
    model, schedule = load_model(data, data["Model"]["ckpt"]), NoiseSchedule("linear")
    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for name in (n for n in available() if "@" not in n and n != "PF"):  # PF: test_sample_with_f_pndm_and_pf
        with torch.no_grad():
            x0, info = sample(model, x_T, schedule, name, 3, generator=torch.Generator().manual_seed(1),
                              return_info=True)
        assert x0.shape == x_T.shape and torch.isfinite(x0).all(), name
        assert info.nfe == expected_nfe(name, 3, schedule), name


def test_ablate_runs_on_a_score_sde_network(tmp_path):
    import csv

    cfg = write_config(tmp_path, "PF_deep")
    assert main(["ablate", "--config", str(cfg), "--out", str(tmp_path / "abl"), "--methods", "S-PNDM,PF",
                 "--steps", "3", "--num-samples", "3", "--reference-samples", "2", "--device", "cpu",
                 "--threads", "1"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "abl" / "results.csv")))
    assert [(r["method"], r["nfe"]) for r in rows][0] == ("S-PNDM", "4") and rows[1]["method"] == "PF"
