"""A tiny 1×8×8 DDPM (random weights) with a config that uses the committed digits FID extractor."""
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[2]
TINY_MODEL = dict(struc="DDIM", type="simple", image_size=8, in_channels=1, out_ch=1, ch=32, ch_mult=[1, 2],
                  num_res_blocks=1, attn_resolutions=[4], dropout=0.0, resamp_with_conv=True)


def write_tiny(folder: Path, seed: int = 0, **model_overrides) -> tuple:
    from models import build_model

    torch.manual_seed(seed)
    model_cfg = {**TINY_MODEL, **model_overrides}
    model = build_model({"Model": model_cfg})
    # re-draw every parameter so that no layer keeps its (zero) default initialisation
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    ckpt = folder / "tiny.pt"
    torch.save(model.state_dict(), ckpt)
    cfg = {
        "Schedule": {"type": "linear", "beta_start": 1e-4, "beta_end": 0.02, "diffusion_step": 1000},
        "Dataset": {"dataset": "DIGITS", "image_size": 8, "channels": 1},
        "Model": {**model_cfg, "ckpt": str(ckpt)},
        "Sample": {"batch_size": 4, "total_num": 10, "method": "DDIM", "steps": 5, "seed": 0},
        "FID": {"stats": str(REPO / "models/weights/digits_fid_stats.npz"), "extractor": "digits",
                "extractor_weights": str(REPO / "models/weights/digits_classifier.pt"), "num_samples": 10},
    }
    path = folder / "tiny.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path, ckpt


@pytest.fixture
def tiny(tmp_path):
    return write_tiny(tmp_path)


def run_main(*args, cwd=REPO, env=None, timeout=300):
    """main.py in a subprocess: (exit code, stdout, stderr)."""
    import subprocess

    proc = subprocess.run([sys.executable, str(REPO / "main.py"), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def kill_sampling_after(monkeypatch, model_calls: int):
    """Make `main.py sample` raise KeyboardInterrupt on model call `model_calls` + 1 (as if killed mid-batch);
    returns a function that puts the real network loader back."""
    import runners.sampling as sampling

    real_load = sampling.load_eps
    calls = {"n": 0}

    def dying_load(*a, **k):
        eps = real_load(*a, **k)

        def eps_that_dies(x, t):
            calls["n"] += 1
            if calls["n"] > model_calls:
                raise KeyboardInterrupt
            return eps(x, t)

        return eps_that_dies

    monkeypatch.setattr(sampling, "load_eps", dying_load)
    return lambda: monkeypatch.setattr(sampling, "load_eps", real_load)
