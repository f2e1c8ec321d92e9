"""The subcommands of main.py: argument + config → validated job → runner. All validation happens before any
output is created, so bad input leaves nothing behind."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from samplers import NoiseSchedule, get_method
from samplers.api import method_grid
from samplers.schedule import check_convention

from .config import ConfigError, get, load_config
from .datasets import DatasetError
from .distributed import setup, teardown
from .fid import StatsError, build_extractor, fid_from_features, folder_features, image_features, load_stats
from .images import sample_path
from .sampling import SampleJob, run_sampling, sha256_file

USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError, ConfigError, StatsError, DatasetError)


def image_shape(cfg: dict) -> tuple:
    model, data = cfg.get("Model", {}), cfg.get("Dataset", {})
    channels = model.get("in_channels", data.get("channels"))
    size = model.get("image_size", data.get("image_size"))
    if channels is None or size is None:
        raise ConfigError("the config needs Model.in_channels and Model.image_size (or Dataset.channels and "
                          "Dataset.image_size)")
    for key, ours in (("image_size", size), ("channels", channels)):
        theirs = data.get(key)
        if theirs is not None and theirs != ours:
            raise ConfigError(f"Model and Dataset disagree: {'image_size' if key == 'image_size' else 'in_channels'}"
                              f"={ours} but Dataset.{key}={theirs}")
    return (int(channels), int(size), int(size))


def load_eps(cfg: dict, ckpt: str, trust: bool, precision: str, device: torch.device, compile: bool = False):
    """The checkpoint as an ε(x, t) callable in the requested precision (torch.compile'd if asked)."""
    from models import load_model
    from models.inference import prepare_for_inference

    if not ckpt:
        raise ConfigError("no checkpoint: pass --ckpt or set Model.ckpt in the config")
    if not Path(ckpt).exists():
        raise FileNotFoundError(f"checkpoint not found: {ckpt}")
    model = load_model(cfg, ckpt, trust_pickle=trust, device=device)
    return prepare_for_inference(model, precision=precision, compile=compile)


def pick(value, fallback):
    """A command-line value when given (0 included), else the config's."""
    return fallback if value is None else value


def positive(name: str, value):
    if value is None or value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


def resolve_sampling(args, cfg: dict, method: str, steps):
    """Validated (method, steps, convention) for one sampling run."""
    m = get_method(method)
    convention = check_convention(args.convention or get(cfg, "Sample", "convention", "standard"))
    schedule = NoiseSchedule.from_config(cfg.get("Schedule", {}))
    if m.kind == "ode":
        steps = None
    else:
        if steps is None:
            raise ValueError(f"{m.name} needs --steps (or Sample.steps)")
        method_grid(m, schedule, steps, convention)  # raises on an impossible grid
    return m.name, steps, convention, schedule


def cmd_sample(args) -> None:
    cfg = load_config(args.config, args.overrides)
    method = args.method or get(cfg, "Sample", "method")
    if method is None:
        raise ValueError("no method: pass --method or set Sample.method")
    method, steps, convention, schedule = resolve_sampling(args, cfg, method,
                                                           pick(args.steps, get(cfg, "Sample", "steps")))
    if args.eta is not None and method != "DDIM":
        raise ValueError(f"--eta applies to DDIM only, not {method}")
    num = positive("--num-samples", pick(args.num_samples, get(cfg, "Sample", "total_num")))
    batch = positive("--batch-size", pick(args.batch_size, get(cfg, "Sample", "batch_size", 64)))
    shape = image_shape(cfg)
    precision = args.precision or get(cfg, "Sample", "precision", "fp32")
    ckpt = args.ckpt or get(cfg, "Model", "ckpt")
    stats = None
    if args.fid:  # fail before sampling, not after
        stats = load_stats(args.stats or get(cfg, "FID", "stats", required=True))
    dist = setup(args.device)
    try:
        compile_ = bool(args.compile or get(cfg, "Sample", "compile", False))
        eps = load_eps(cfg, ckpt, args.trust_checkpoint, precision, dist.device, compile=compile_)
        job = SampleJob(config=cfg, method=method, steps=steps, convention=convention, num_samples=num,
                        seed=args.seed if args.seed is not None else get(cfg, "Sample", "seed", 0),
                        image_shape=shape, checkpoint=str(ckpt), checkpoint_sha256=sha256_file(ckpt),
                        precision=precision, eta=args.eta, batch_size=batch)
        manifest = run_sampling(job, eps, schedule, Path(args.out), dist)
        if dist.is_main:
            print(f"{manifest['num_samples']} samples in {args.out} ({method}, {steps} steps, NFE {manifest['nfe']})")
            if args.fid:
                evaluate_folder(cfg, Path(args.out), stats, args.inception_weights, dist.device)
    finally:
        teardown()


def evaluate_folder(cfg: dict, folder: Path, reference: dict, weights, device, batch_size=None,
                    progress: bool = True) -> dict:
    """FID of the images in ``folder`` (exactly the manifest's samples when there is one); writes fid.json."""
    extractor = build_extractor(cfg, device, weights)
    channels = image_shape(cfg)[0] if cfg.get("Model") or cfg.get("Dataset") else 3
    batch_size = batch_size or get(cfg, "FID", "batch_size", 200)
    manifest_path = folder / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("status") != "complete":
            raise ValueError(f"{folder} is an unfinished sampling run: rerun its 'sample' command first")
        num = manifest["num_samples"]
        features = image_features([sample_path(folder, i, num) for i in range(num)], extractor, channels,
                                  batch_size, progress)
    else:
        features = folder_features(folder, extractor, channels, batch_size, progress=progress)
    fid = fid_from_features(features, reference, extractor.name)
    result = {"fid": fid, "num_samples": int(features.shape[0]), "extractor": extractor.name,
              "stats": reference["source"], "stats_num_images": reference["num_images"],
              "written": time.strftime("%Y-%m-%dT%H:%M:%S")}
    tmp = folder / ".fid.json.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, folder / "fid.json")
    print(f"FID {fid:.4f} ({features.shape[0]} samples, {extractor.name})")
    return result


def cmd_fid(args) -> None:
    cfg = load_config(args.config, args.overrides)
    folder = Path(args.samples)
    if not folder.is_dir():
        raise FileNotFoundError(f"samples folder not found: {folder}")
    reference = load_stats(args.stats or get(cfg, "FID", "stats", required=True))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    evaluate_folder(cfg, folder, reference, args.inception_weights, device, args.batch_size)


def cmd_stats(args) -> None:
    from torch.utils.data import DataLoader

    from .datasets import image_dataset
    from .fid import extract_features, save_stats

    cfg = load_config(args.config, args.overrides)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    batch = positive("--batch-size", pick(args.batch_size, get(cfg, "FID", "batch_size", 200)))
    if args.source:
        source = Path(args.source)
        if not source.is_dir():
            raise FileNotFoundError(f"--source folder not found: {source}")
        extractor = build_extractor(cfg, device, args.inception_weights)
        features = folder_features(source, extractor, image_shape(cfg)[0], batch)
        label = str(source)
    else:
        split = args.split or get(cfg, "Dataset", "split", "train")
        data = image_dataset(cfg, split)
        extractor = build_extractor(cfg, device, args.inception_weights)
        loader = DataLoader(data, batch_size=batch, shuffle=False, num_workers=0)
        features = extract_features(extractor, (x for x, _ in loader), len(data))
        label = f"{cfg['Dataset'].get('dataset')}:{split}"
    save_stats(Path(args.out), features, extractor.name, label)
    print(f"statistics of {features.shape[0]} images ({extractor.name}, {features.shape[1]}-d) → {args.out}")


def cmd_ablate(args) -> None:
    from .ablate import run_ablation

    run_ablation(args)


def cmd_train(args) -> None:
    from .training import run_training

    run_training(args)


COMMANDS = {"sample": cmd_sample, "fid": cmd_fid, "stats": cmd_stats, "ablate": cmd_ablate, "train": cmd_train}
