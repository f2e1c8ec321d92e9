"""One pass from noise to FID: the images go to the feature network as they are sampled, the statistics are
streamed, and the number equals the one read back from the PNG files — exactly, on a fresh, a resumed and a
re-read run; features do not depend on the batch size; the extractor's weights are recorded."""
import json

import numpy as np
import pytest
import torch

from main import main
from runners.features import DigitsExtractor, build_extractor, tf32_policy
from runners.fid import FeatureStats, load_stats
from runners.setup import sha256_file

from .conftest import REPO, kill_sampling_after

DIGITS_WEIGHTS = REPO / "models/weights/digits_classifier.pt"


def sample(cfg, out, *extra):
    return main(["sample", "--config", str(cfg), "--out", str(out), "--device", "cpu", *map(str, extra)])


def fid_json(folder):
    return json.loads((folder / "fid.json").read_text())


def test_one_pass_fid_equals_the_fid_read_back_from_the_files(tiny, tmp_path):
    cfg, _ = tiny
    out = tmp_path / "s"
    assert sample(cfg, out, "--num-samples", 150, "--batch-size", 23, "--fid") == 0
    one_pass = fid_json(out)
    assert one_pass["features_from"] == "sampling" and one_pass["num_samples"] == 150
    assert main(["fid", "--config", str(cfg), "--samples", str(out), "--device", "cpu"]) == 0
    reread = fid_json(out)
    assert reread["features_from"] == "files"
    assert reread["fid"] == one_pass["fid"]  # bit for bit, not approximately


def test_features_do_not_depend_on_the_batch_size():
    extractor = DigitsExtractor("cpu", str(DIGITS_WEIGHTS))
    images = torch.randint(0, 256, (150, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))

    def features(batch):
        return torch.cat([extractor(images[lo:lo + batch]) for lo in range(0, len(images), batch)])

    reference = features(64)
    for batch in (1, 7, 150):
        assert torch.equal(features(batch), reference), batch


def test_features_do_not_depend_on_the_callers_thread_count():
    """--threads' default follows the machine's load, and on some CPUs (an AVX-512 Xeon) the network's output
    depends on the thread count: the extractor runs with its own fixed count, and restores the caller's."""
    extractor = DigitsExtractor("cpu", str(DIGITS_WEIGHTS))
    images = torch.randint(0, 256, (150, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(extractor(images))
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(r, results[0]) for r in results[1:])


def test_streamed_statistics_depend_only_on_the_rows_and_match_numpy():
    features = np.random.default_rng(0).normal(0.5, 1.0, size=(2345, 16))
    whole = FeatureStats.of(features)
    pieces = FeatureStats(16)
    for lo in range(0, len(features), 7):
        pieces.add(features[lo:lo + 7])
    (mu_a, sigma_a), (mu_b, sigma_b) = whole.mean_cov(), pieces.mean_cov()
    assert np.array_equal(mu_a, mu_b) and np.array_equal(sigma_a, sigma_b)
    assert np.array_equal(sigma_a, sigma_a.T)
    # Σffᵀ − nμμᵀ and numpy's centred product agree to float64 rounding, not bit for bit
    np.testing.assert_allclose(mu_a, features.mean(0), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(sigma_a, np.cov(features, rowvar=False), rtol=1e-11, atol=1e-13)


def test_resumed_one_pass_fid_equals_an_uninterrupted_run(tiny, tmp_path, monkeypatch):
    """Killed in its third batch (40 of 150 done per batch), the rerun streams the new images and reads the 80
    left on disk; a chunk of the feature network holds both kinds (images 64..127)."""
    cfg, _ = tiny
    assert sample(cfg, tmp_path / "fresh", "--num-samples", 150, "--batch-size", 40, "--fid") == 0
    restore = kill_sampling_after(monkeypatch, 11)  # DDIM 5 steps: 5 calls per batch, dies in batch 3
    resumed = tmp_path / "resumed"
    assert sample(cfg, resumed, "--num-samples", 150, "--batch-size", 40, "--fid") == 130
    assert len(list(resumed.glob("*.png"))) == 80 and not (resumed / "fid.json").exists()
    restore()
    assert sample(cfg, resumed, "--num-samples", 150, "--batch-size", 32, "--fid") == 0
    assert fid_json(resumed)["features_from"] == "sampling (80 read from the PNGs of an earlier run)"
    assert fid_json(resumed)["fid"] == fid_json(tmp_path / "fresh")["fid"]


def test_extractor_weights_sha256_in_statistics_and_fid_json(tiny, tmp_path, capsys):
    cfg, _ = tiny
    out = tmp_path / "s"
    assert sample(cfg, out, "--num-samples", 20, "--batch-size", 20, "--fid") == 0
    digest = sha256_file(DIGITS_WEIGHTS)
    assert fid_json(out)["extractor_sha256"] == digest
    # the committed statistics name the weights they were computed with, so other weights are refused with them
    assert fid_json(out)["stats_extractor_sha256"] == digest
    assert load_stats(REPO / "models/weights/digits_fid_stats.npz")["extractor_sha256"] == digest
    stats = tmp_path / "st.npz"
    assert main(["stats", "--config", str(cfg), "--source", str(out), "--out", str(stats), "--device", "cpu"]) == 0
    with np.load(stats) as f:
        assert str(f["extractor_sha256"]) == digest
    assert load_stats(stats)["extractor_sha256"] == digest
    # the manifest's config names the statistics a --stats run scored against (it kept the config file's)
    assert sample(cfg, tmp_path / "own", "--num-samples", 4, "--fid", "--stats", stats) == 0
    recorded = json.loads((tmp_path / "own" / "manifest.json").read_text())["config"]["FID"]
    assert recorded["stats"] == str(stats) and recorded["extractor_weights"] == str(DIGITS_WEIGHTS)

    # statistics of other weights of the same network are refused before sampling, in one line
    other = tmp_path / "other.pt"
    state = torch.load(DIGITS_WEIGHTS, weights_only=True)
    state["head.bias"] = state["head.bias"] + 1  # not a feature layer, but other weights all the same
    torch.save(state, other)
    capsys.readouterr()
    code = sample(cfg, tmp_path / "refused", "--num-samples", 20, "--fid", "--stats", stats,
                  "--set", f"FID.extractor_weights={other}")
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code == 2 and len(err) == 1 and "other digits-classifier-128 weights" in err[0], err
    assert not (tmp_path / "refused").exists()
    # and so are the committed statistics, when a finished folder is scored with other weights: its fid.json stays
    before = (out / "fid.json").read_bytes()
    code = main(["fid", "--config", str(cfg), "--samples", str(out), "--inception-weights", str(other),
                 "--device", "cpu"])
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code == 2 and len(err) == 1 and "other digits-classifier-128 weights" in err[0], err
    assert (out / "fid.json").read_bytes() == before


def test_background_png_writes_equal_sequential_writes(tmp_path):
    from runners.images import PngWriter, write_png

    images = torch.randint(0, 256, (30, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    for i, image in enumerate(images):
        write_png(tmp_path / "seq" / f"{i:06d}.png", image)
    with PngWriter(workers=3, max_pending=2) as writer:
        for lo in range(0, 30, 4):
            writer.submit([tmp_path / "bg" / f"{i:06d}.png" for i in range(lo, min(lo + 4, 30))], images[lo:lo + 4])
    assert writer.written == 30
    for i in range(30):
        assert (tmp_path / "bg" / f"{i:06d}.png").read_bytes() == (tmp_path / "seq" / f"{i:06d}.png").read_bytes()
    assert not list((tmp_path / "bg").glob(".*"))


def test_a_writer_thread_error_is_one_line_and_the_run_is_not_complete(tiny, tmp_path, monkeypatch, capsys):
    import runners.images as images

    cfg, _ = tiny
    real = images.write_atomic

    def full_disk(path, write, **kw):
        if path.name == "000005.png":
            raise OSError(28, "No space left on device")
        return real(path, write, **kw)

    monkeypatch.setattr(images, "write_atomic", full_disk)
    out = tmp_path / "out"
    code = sample(cfg, out, "--num-samples", 12, "--batch-size", 4, "--fid")
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: cannot write") and "No space left" in err[0], err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "running" and not (out / "fid.json").exists()
    monkeypatch.setattr(images, "write_atomic", real)
    assert sample(cfg, out, "--num-samples", 12, "--batch-size", 4) == 0  # the rerun finishes the folder
    assert len(list(out.glob("*.png"))) == 12


def test_tf32_policy_is_set_inside_the_extractor_and_restored():
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = matmul.allow_tf32, cudnn.allow_tf32
    seen = []
    extractor = build_extractor("digits", str(DIGITS_WEIGHTS), "cpu")
    real = extractor._features
    extractor._features = lambda x: seen.append((matmul.allow_tf32, cudnn.allow_tf32)) or real(x)
    try:
        matmul.allow_tf32 = cudnn.allow_tf32 = True
        extractor(torch.zeros(3, 1, 8, 8, dtype=torch.uint8))
        assert seen == [(False, False)]
        assert (matmul.allow_tf32, cudnn.allow_tf32) == (True, True)
        with pytest.raises(RuntimeError), tf32_policy(True):
            assert (matmul.allow_tf32, cudnn.allow_tf32) == (True, True)
            matmul.allow_tf32 = False
            raise RuntimeError
        assert (matmul.allow_tf32, cudnn.allow_tf32) == (True, True)  # restored even after an error
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = before


def test_solves_run_together_give_each_the_numbers_it_gets_alone(tiny):
    """The ablation's reference solutions of several start times share network calls (runners.ablate.solve_together);
    every solve must get exactly the samples it gets alone, however many calls the others make."""
    import yaml

    from runners.ablate import solve_together
    from runners.setup import load_eps, model_spec
    from samplers import NoiseSchedule, sample as run

    cfg_path, ckpt = tiny
    cfg = yaml.safe_load(cfg_path.read_text())
    eps = load_eps(model_spec(cfg, str(ckpt), "--ckpt", False, "fp32", False), cfg, torch.device("cpu"))
    schedule = NoiseSchedule("linear")
    x_T = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    settings = [("iPNDM@paper", 9), ("DDIM", 4), ("F-PNDM", 6), ("S-PNDM", 3)]
    alone = [run(eps, x_T, schedule, m, steps=s) for m, s in settings]
    together = solve_together(eps, [lambda model, m=m, s=s: run(model, x_T, schedule, m, steps=s)
                                    for m, s in settings])
    for (m, s), a, b in zip(settings, alone, together):
        assert torch.equal(a, b), (m, s)

    def fails(model):
        run(model, x_T, schedule, "DDIM", steps=2)
        raise FloatingPointError("boom")

    with pytest.raises(FloatingPointError, match="boom"):
        solve_together(eps, [lambda model: run(model, x_T, schedule, "DDIM", steps=8), fails])


def test_torchrun_two_processes_stream_and_sum_their_statistics(tiny, tmp_path):
    """Under torchrun each rank streams its own images' features; the sums are all-reduced. Only the order of
    the float64 additions differs from one process, so the FID agrees to rounding."""
    import os
    import subprocess
    import sys

    cfg, _ = tiny
    assert sample(cfg, tmp_path / "one", "--num-samples", 150, "--batch-size", 40, "--fid") == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "main.py"), "sample", "--config", str(cfg), "--out", str(tmp_path / "two"),
           "--num-samples", "150", "--batch-size", "40", "--fid", "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert fid_json(tmp_path / "two")["num_samples"] == 150
    assert fid_json(tmp_path / "two")["fid"] == pytest.approx(fid_json(tmp_path / "one")["fid"], rel=1e-12)


def test_a_json_file_given_as_statistics_is_named_as_such(tmp_path):
    from runners.errors import StatsError

    path = tmp_path / "fid.json"
    path.write_text('{"fid": 3.7}')
    with pytest.raises(StatsError, match=r"not an \.npz file"):  # not numpy's advice about allow_pickle
        load_stats(path)
