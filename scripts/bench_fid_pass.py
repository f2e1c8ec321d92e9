#!/usr/bin/env python
"""One pass from noise to FID against the old path, on a CIFAR-10-shaped cell with random weights.

    python scripts/bench_fid_pass.py                         # 2,000 samples, S-PNDM 4 steps, CPU
    python scripts/bench_fid_pass.py --num-samples 500 --repeats 2

Helpers for scripts/bench_gpu.sh (its 50,000-sample cell), each alone:

    python scripts/bench_fid_pass.py --write-inception W.pth                      # random FID Inception file
    python scripts/bench_fid_pass.py --write-reference R.npz --inception-weights W.pth  # N(0, I) statistics
    python scripts/bench_fid_pass.py --timed-sample -- --config … --fid …         # main.py sample, network timed
    python scripts/bench_fid_pass.py --tf32-compare DIR --inception-weights W.pth --device cuda

Both paths sample the same images with the same sampler and network, in the same process, and score them with
pytorch-fid's FID Inception (2048-d pool3; random weights written in the real file format, so the real loading
code runs) against synthetic reference statistics N(0, I) (the Fréchet distance costs the same for any 2048-d
reference):

- old: sample → PNG files written in the sampling loop → every PNG read back → features → FID;
- one pass (``main.py sample --fid`` since issue #15): each finished batch's uint8 images go straight to the
  feature network while background threads write the PNGs; the statistics are streamed.

The network is a small DDPM UNet (the CIFAR-10 UNet's class at ch=32, ch_mult 1,2,2, one res block per level,
attention at 16×16: 1.1M parameters instead of 35.7M), so that the CPU spends its time on the FID pipeline rather
than on the network. The split printed per path: sampling (network included), PNG writing, features (reading
PNGs included), FID; the two paths' FIDs must be equal (same uint8 pixels, same features, same order).
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SMALL_UNET = dict(struc="DDIM", type="simple", image_size=32, in_channels=3, out_ch=3, ch=32, ch_mult=[1, 2, 2],
                  num_res_blocks=1, attn_resolutions=[16], dropout=0.0, resamp_with_conv=True)


def write_random_fid_inception(path: Path, seed: int = 0, calibration_images: int = 16) -> None:
    """pytorch-fid's FID Inception (torchvision's InceptionV3 with the FID blocks, 1008 classes) with random
    weights, saved as a plain state dict like pt_inception-2015-12-05-6726825d.pth. The batch-norm statistics are
    set from a few random 32×32 images prepared as pytorch-fid prepares its input (train-mode passes), so that
    the activations keep a sane scale through the ~100 layers (pool3 features ≈ 0.4 ± 0.1)."""
    import pytorch_fid.inception as pi
    import torchvision

    torch.manual_seed(seed)
    net = torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None, init_weights=False)
    net.Mixed_5b = pi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pi.FIDInceptionE_1(1280)
    net.Mixed_7c = pi.FIDInceptionE_2(2048)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration passes
    net.train()
    with torch.no_grad():
        for _ in range(2):  # inputs as pytorch-fid prepares 32×32 images: bilinear to 299², then to [-1, 1]
            x = torch.nn.functional.interpolate(torch.rand(calibration_images // 2, 3, 32, 32), size=(299, 299),
                                                mode="bilinear", align_corners=False)
            net(2 * x - 1)
    torch.save(net.state_dict(), path)


def synthetic_reference(path: Path, source: str, sha256: str) -> None:
    from runners.features import INCEPTION

    np.savez(path, mu=np.zeros(2048), sigma=np.eye(2048), extractor=np.array(INCEPTION), dims=np.array(2048),
             num_images=np.array(-1), source=np.array(source), extractor_sha256=np.array(sha256))


def timed_sample(argv: list) -> int:
    """``main.py sample ARGV`` in this process, with the network timed (synchronized before and after each call,
    so the sampler's own GPU kernels count as sampling, not network) and its first call (compilation with
    --compile) timed apart; prints the split next to main.py's own ``seconds:`` line."""
    import runners.sampling as sampling
    from main import main as run_main
    from runners.frontier.overhead import TimedModel

    started, timed, real_load = time.perf_counter(), {}, sampling.load_eps

    def load_timed(spec, cfg, device):
        eps = real_load(spec, cfg, device)
        batch = int(argv[argv.index("--batch-size") + 1]) if "--batch-size" in argv else 1
        shape = (batch, cfg["Model"]["in_channels"], cfg["Model"]["image_size"], cfg["Model"]["image_size"])
        first = time.perf_counter()
        eps(torch.randn(shape, device=device), torch.full((batch,), 500.0, device=device))  # compiles if asked
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        timed["first_call"] = time.perf_counter() - first
        timed["model"] = TimedModel(eps)
        return timed["model"]

    sampling.load_eps = load_timed
    code = run_main(["sample", *argv])
    wall = time.perf_counter() - started
    print(f"timed-sample: exit {code}, wall {wall:.1f} s in this process (imports before it not counted); "
          f"first network call (start-up/compile) {timed.get('first_call', float('nan')):.1f} s; network "
          f"{timed['model'].seconds if 'model' in timed else float('nan'):.1f} s", flush=True)
    return code


def tf32_compare(folder: Path, weights: str, device: str, stats_file: Optional[str]) -> None:
    """FID of a finished folder with the feature network's TF32 off (the default) and on: the whole folder
    against ``stats_file`` and, so that the difference is seen next to a FID of realistic size, its first half
    against its second half. The features are kept in memory (50,000 × 2048 float64: 0.8 GB per setting) and
    computed in the chunks the streamed path uses, so the whole folder's statistics are bit-identical to
    ``main.py fid``'s; with a one-pass fid.json in the folder, the FID it recorded must equal them exactly."""
    from runners.errors import StatsError
    from runners.evaluate import sample_files
    from runners.features import build_extractor, read_image
    from runners.fid import FeatureStats, fid_from_stats, load_stats

    paths = sample_files(Path(folder))
    n = len(paths)
    extractor = build_extractor("inception", weights, torch.device(device))
    recorded = json.loads((Path(folder) / "fid.json").read_text()) if (Path(folder) / "fid.json").exists() else {}
    features, results = {}, {}
    for allow in (False, True):
        extractor.allow_tf32 = allow
        started, parts = time.perf_counter(), []
        for lo in range(0, n, 16 * extractor.chunk):  # whole chunks from image 0, as FeatureStream feeds them
            images = np.stack([read_image(p, 3) for p in paths[lo:lo + 16 * extractor.chunk]])
            parts.append(extractor(torch.from_numpy(images)).numpy())
        seconds = time.perf_counter() - started
        features[allow] = f = np.concatenate(parts)
        try:
            mu, sigma = FeatureStats.of(f[n // 2:]).mean_cov()
            second = {"mu": mu, "sigma": sigma, "extractor": extractor.name, "dims": f.shape[1]}
            results[allow] = (fid_from_stats(FeatureStats.of(f[:n // 2]), second, extractor.name),
                              fid_from_stats(FeatureStats.of(f), load_stats(stats_file), extractor.name)
                              if stats_file else float("nan"))
        except StatsError as e:  # a dry run's few samples: singular covariances
            print(f"TF32 {'on' if allow else 'off'}: {e}")
            return
        print(f"TF32 {'on ' if allow else 'off'}: features of {n} PNGs read back in {seconds:.1f} s "
              f"({n / seconds:.1f} images/s); FID first half vs second half {results[allow][0]:.6f}, whole folder "
              f"vs {stats_file} {results[allow][1]:.6f}", flush=True)
    (off, off_whole), (on, on_whole) = results[False], results[True]
    deviation = np.abs(features[True] - features[False]).max() / np.abs(features[False]).max()
    print(f"TF32 effect: features {deviation:.2e} (max |on − off| / max |off|); FID half vs half {on - off:+.3e} "
          f"({(on - off) / off:+.2e} relative); whole folder {on_whole - off_whole:+.3e}")
    if recorded.get("features_from") == "sampling" and stats_file:
        print(f"one pass (fid.json) {recorded['fid']!r} vs read back with TF32 off {off_whole!r}: "
              f"{'equal' if recorded['fid'] == off_whole else 'DIFFERENT'}")


def old_path(job, eps, extractor, reference) -> tuple[float, dict]:
    """The pipeline before issue #15, from today's pieces: PNGs written in the loop, then read back."""
    from runners.fid import fid_from_stats, file_stats
    from runners.images import sample_path, to_uint8, write_png
    from runners.sampling import initial_noise, sampler_generators
    from samplers import sample

    s, t = job.sampling, dict.fromkeys(("sampling", "png", "features", "fid"), 0.0)
    paths = [sample_path(job.out, i, job.num_samples) for i in range(job.num_samples)]
    for lo in range(0, job.num_samples, job.batch_size):
        batch = list(range(lo, min(lo + job.batch_size, job.num_samples)))
        started = time.perf_counter()
        x0 = sample(eps, initial_noise(batch, job.image_shape, job.seed), job.schedule, s.method, s.steps,
                    s.convention, generator=sampler_generators(batch, job.seed))
        images = to_uint8(x0).cpu()
        t["sampling"] += time.perf_counter() - started
        started = time.perf_counter()
        for i, image in zip(batch, images):
            write_png(paths[i], image)
        t["png"] += time.perf_counter() - started
    started = time.perf_counter()
    stats = file_stats(paths, extractor, 3, 32, progress=False)
    t["features"] = time.perf_counter() - started
    started = time.perf_counter()
    fid = fid_from_stats(stats, reference, extractor.name)
    t["fid"] = time.perf_counter() - started
    return fid, t


def one_pass(job, eps, extractor, spec) -> tuple[float, dict]:
    from runners.distributed import Dist
    from runners.evaluate import fid_of_sample_folder
    from runners.sampling import OnePass, sample_into

    dist = Dist(0, 1, torch.device(extractor.device))
    run = OnePass(extractor)
    sample_into(job, eps, dist, progress=False, one_pass=run)
    stats = run.statistics(dist)
    started = time.perf_counter()
    fid = fid_of_sample_folder(Path(job.out), spec, extractor, job.image_shape, write=False, stats=stats)["fid"]
    t = {"sampling": run.seconds["sampling"], "png": run.seconds["png_wait"], "features": run.seconds["features"],
         "fid": time.perf_counter() - started, "png_threads": run.seconds["png_threads"]}
    return fid, t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-samples", type=int, default=2000)
    p.add_argument("--method", default="S-PNDM")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--repeats", type=int, default=1, help="alternating rounds of old and one pass (min reported)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--write-inception", metavar="PATH", help="write the random-weight FID Inception file and exit")
    p.add_argument("--write-reference", metavar="PATH",
                   help="write N(0, I) reference statistics for --inception-weights and exit")
    p.add_argument("--inception-weights", metavar="PATH")
    p.add_argument("--stats", metavar="PATH", help="with --tf32-compare: the reference statistics")
    p.add_argument("--timed-sample", action="store_true",
                   help="run 'main.py sample' with the arguments after --, timing the network, and exit")
    p.add_argument("--tf32-compare", metavar="DIR", help="FID of a finished folder with TF32 off and on, and exit")
    args, rest = p.parse_known_args()
    if args.write_inception:
        write_random_fid_inception(Path(args.write_inception))
        print(f"random-weight FID Inception → {args.write_inception}")
        return
    if args.write_reference:
        from runners.setup import sha256_file

        synthetic_reference(Path(args.write_reference), "synthetic N(0, I)", sha256_file(args.inception_weights))
        print(f"N(0, I) reference statistics → {args.write_reference}")
        return
    if args.timed_sample:
        from runners.setup import apply_threads

        apply_threads(args.threads)
        sys.exit(timed_sample([a for a in rest if a != "--"]))
    if args.tf32_compare:
        tf32_compare(Path(args.tf32_compare), args.inception_weights, args.device, args.stats)
        return
    if rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")

    from models import build_model, prepare_for_inference
    from runners.features import build_extractor
    from runners.fid import load_stats
    from runners.jobs import FidSpec, SampleJob, Sampling
    from runners.setup import ModelSpec, apply_threads, sha256_file
    from samplers import NoiseSchedule, expected_nfe

    threads = apply_threads(args.threads)
    device = torch.device(args.device)
    work = Path(tempfile.mkdtemp(prefix="bench_fid_pass_"))
    try:
        weights, stats_path = work / "pt_inception_random.pth", work / "reference.npz"
        write_random_fid_inception(weights)
        digest = sha256_file(weights)
        synthetic_reference(stats_path, "synthetic N(0, I)", digest)
        extractor = build_extractor("inception", str(weights), device, sha256=digest)
        reference = load_stats(stats_path)
        spec = FidSpec(str(stats_path), sha256_file(stats_path), reference, "inception", str(weights), digest)
        torch.manual_seed(0)
        model = build_model({"Model": SMALL_UNET}).to(device).eval()
        eps = prepare_for_inference(model)
        schedule = NoiseSchedule("linear")
        sampling = Sampling(args.method, args.steps, "standard", None,
                            expected_nfe(args.method, args.steps, schedule))
        params = sum(p.numel() for p in model.parameters()) / 1e6

        def job(name):
            return SampleJob(config={"Model": SMALL_UNET}, out=work / name, sampling=sampling, schedule=schedule,
                             model=ModelSpec("random", "random"), num_samples=args.num_samples, seed=0,
                             batch_size=args.batch_size, image_shape=(3, 32, 32), device=str(device))

        print(f"# one pass vs old path: {args.num_samples} samples 3×32×32, {args.method} {args.steps} steps "
              f"(NFE {sampling.nfe}), batch {args.batch_size}, small DDPM UNet ({params:.1f}M parameters, random), "
              f"random FID Inception; {device}, {threads} threads, torch {torch.__version__}, "
              f"{platform.processor() or platform.machine()}")
        eps(torch.randn(2, 3, 32, 32, device=device), torch.full((2,), 500.0, device=device))  # warm-up
        extractor(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
        best = {}
        for r in range(args.repeats):
            for name, run in (("old", lambda: old_path(job(f"old{r}"), eps, extractor, reference)),
                              ("one pass", lambda: one_pass(job(f"new{r}"), eps, extractor, spec))):
                load = open("/proc/loadavg").read().split()[0]
                started = time.perf_counter()
                fid, t = run()
                wall = time.perf_counter() - started
                print(f"round {r} {name:>8}: wall {wall:.1f} s = sampling {t['sampling']:.1f} + PNG {t['png']:.1f}"
                      + (f" (writer threads busy {t['png_threads']:.1f})" if "png_threads" in t else "")
                      + f" + features {t['features']:.1f} + FID {t['fid']:.1f}; FID {fid:.6f}; load {load}")
                if name not in best or wall < best[name][0]:
                    best[name] = (wall, fid)
        (old, fid_old), (new, fid_new) = best["old"], best["one pass"]
        print(f"one pass is {old / new:.2f}x the old path's speed (min over {args.repeats} rounds: {old:.1f} s vs "
              f"{new:.1f} s); FIDs equal: {fid_old == fid_new}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
