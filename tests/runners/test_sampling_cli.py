"""main.py sample / fid / stats: exact files, determinism across batch sizes, processes and interruptions, FID
against pytorch-fid, and one-line errors for bad input."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from main import main
from runners.images import sample_path
from runners.sampling import _git_state, versions
from runners.setup import sha256_file

from .conftest import REPO, kill_sampling_after, write_tiny


def files_of(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def sample(cfg, out, *extra):
    return main(["sample", "--config", str(cfg), "--out", str(out), "--device", "cpu", *map(str, extra)])


def test_sample_writes_exactly_the_requested_files(tiny, tmp_path):
    cfg, ckpt = tiny
    out = tmp_path / "out"
    assert sample(cfg, out, "--num-samples", 10, "--method", "s-pndm", "--steps", 4) == 0
    assert sorted(files_of(out)) == [f"{i:06d}.png" for i in range(10)]
    with Image.open(out / "000003.png") as im:
        assert (im.mode, im.size) == ("L", (8, 8))
    m = json.loads((out / "manifest.json").read_text())
    assert (m["status"], m["method"], m["steps"], m["nfe"], m["num_samples"]) == ("complete", "S-PNDM", 4, 5, 10)
    assert m["checkpoint_sha256"] == sha256_file(ckpt)
    assert m["config"]["Model"]["ch"] == 32 and "torch" in m["versions"]
    # the recorded config is the one that ran: the flags' values, not the file's (DDIM, 5 steps, 10 samples)
    assert {k: m["config"]["Sample"][k] for k in ("method", "steps", "total_num")} == \
        {"method": "S-PNDM", "steps": 4, "total_num": 10}
    assert m["config"]["Model"]["ckpt"] == str(ckpt)
    assert not list(out.rglob(".*.tmp"))


def test_images_do_not_depend_on_batch_size(tiny, tmp_path):
    cfg, _ = tiny
    assert sample(cfg, tmp_path / "a", "--num-samples", 9, "--batch-size", 2) == 0
    assert sample(cfg, tmp_path / "b", "--num-samples", 9, "--batch-size", 9) == 0
    assert files_of(tmp_path / "a") == files_of(tmp_path / "b")


def test_stochastic_sampler_is_reproducible_per_sample(tiny, tmp_path):
    cfg, _ = tiny
    assert sample(cfg, tmp_path / "a", "--num-samples", 6, "--method", "DDPM", "--steps", 10, "--batch-size", 6) == 0
    assert sample(cfg, tmp_path / "b", "--num-samples", 6, "--method", "DDPM", "--steps", 10, "--batch-size", 4) == 0
    assert files_of(tmp_path / "a") == files_of(tmp_path / "b")


def test_interrupted_run_resumes_to_the_same_files(tiny, tmp_path, monkeypatch):
    cfg, _ = tiny
    assert sample(cfg, tmp_path / "full", "--num-samples", 10, "--batch-size", 3) == 0

    restore = kill_sampling_after(monkeypatch, 11)  # 5 model calls per batch: dies inside the third batch
    assert sample(cfg, tmp_path / "resumed", "--num-samples", 10, "--batch-size", 3) == 130
    partial = files_of(tmp_path / "resumed")
    assert len(partial) == 6 and not list((tmp_path / "resumed").rglob(".*.tmp"))
    interrupted = json.loads((tmp_path / "resumed" / "manifest.json").read_text())
    assert interrupted["status"] == "running" and interrupted["seconds"] > 0  # the attempt's time is kept
    restore()
    assert sample(cfg, tmp_path / "resumed", "--num-samples", 10, "--batch-size", 4) == 0
    assert files_of(tmp_path / "resumed") == files_of(tmp_path / "full")
    assert json.loads((tmp_path / "resumed" / "manifest.json").read_text())["seconds"] > interrupted["seconds"]


def test_torchrun_two_gloo_processes_equal_one(tiny, tmp_path):
    cfg, _ = tiny
    assert sample(cfg, tmp_path / "one", "--num-samples", 7, "--method", "F-PNDM", "--steps", 5) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "main.py"), "sample", "--config", str(cfg), "--out", str(tmp_path / "two"),
           "--num-samples", "7", "--method", "F-PNDM", "--steps", "5", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert files_of(tmp_path / "two") == files_of(tmp_path / "one")
    assert json.loads((tmp_path / "two" / "manifest.json").read_text())["status"] == "complete"


def test_large_runs_use_subfolders_of_1000(tmp_path):
    assert sample_path(tmp_path, 12345, 20000) == tmp_path / "012" / "012345.png"
    assert sample_path(tmp_path, 12345, 10000) == tmp_path / "012345.png"


def test_growing_past_the_flat_limit_moves_the_images_instead_of_resampling(tiny, tmp_path, monkeypatch, capsys):
    """A run grown from ≤ FLAT_LIMIT to more images is laid out in subfolders: the earlier images are moved there
    (same files, same inodes: not sampled again), none is left behind, and the FID counts each image once."""
    import runners.images

    monkeypatch.setattr(runners.images, "FLAT_LIMIT", 5)
    cfg, _ = tiny
    grown, fresh = tmp_path / "grown", tmp_path / "fresh"
    assert sample(cfg, grown, "--num-samples", 4, "--steps", 3) == 0
    assert sorted(files_of(grown)) == [f"{i:06d}.png" for i in range(4)]
    inodes = [os.stat(grown / f"{i:06d}.png").st_ino for i in range(4)]
    assert sample(cfg, grown, "--num-samples", 9, "--steps", 3, "--fid") == 0
    assert sorted(files_of(grown)) == [f"000/{i:06d}.png" for i in range(9)]
    assert [os.stat(grown / "000" / f"{i:06d}.png").st_ino for i in range(4)] == inodes
    assert sample(cfg, fresh, "--num-samples", 9, "--steps", 3, "--fid") == 0
    assert files_of(grown) == files_of(fresh)
    ours, theirs = (json.loads((d / "fid.json").read_text()) for d in (grown, fresh))
    assert ours["num_samples"] == theirs["num_samples"] == 9 and ours["fid"] == pytest.approx(theirs["fid"], rel=1e-9)


def test_growing_a_run_without_fid_removes_the_fid_of_fewer_samples(tiny, tmp_path, capsys):
    cfg, _ = tiny
    out = tmp_path / "s"
    assert sample(cfg, out, "--num-samples", 6, "--steps", 3, "--fid") == 0
    assert json.loads((out / "fid.json").read_text())["num_samples"] == 6
    assert sample(cfg, out, "--num-samples", 6, "--steps", 3) == 0  # nothing new: the FID still describes it
    assert (out / "fid.json").exists()
    assert sample(cfg, out, "--num-samples", 8, "--steps", 3) == 0
    assert not (out / "fid.json").exists()
    assert "removed" in capsys.readouterr().out


def test_fid_of_samples_against_their_own_statistics_is_zero(tiny, tmp_path):
    cfg, _ = tiny
    out = tmp_path / "s"
    assert sample(cfg, out, "--num-samples", 300, "--batch-size", 300, "--steps", 2) == 0
    assert main(["stats", "--config", str(cfg), "--source", str(out), "--out", str(tmp_path / "st.npz"),
                 "--device", "cpu"]) == 0
    assert main(["fid", "--config", str(cfg), "--samples", str(out), "--stats", str(tmp_path / "st.npz"),
                 "--device", "cpu"]) == 0
    result = json.loads((out / "fid.json").read_text())
    assert result["num_samples"] == 300 and abs(result["fid"]) < 1e-6
    with np.load(tmp_path / "st.npz") as f:
        assert str(f["extractor"]) == "digits-classifier-128" and int(f["num_images"]) == 300


def _random_fid_inception_weights(path: Path) -> None:
    """pytorch-fid's FID-Inception architecture with random weights, saved like the real weights file."""
    import pytorch_fid.inception as pi

    built = {}
    real_builder = pi._inception_v3

    def capture(*a, **k):
        built["net"] = real_builder(*a, **k)
        return built["net"]

    orig = pi._inception_v3, pi.load_state_dict_from_url
    pi._inception_v3 = capture
    pi.load_state_dict_from_url = lambda *a, **k: built["net"].state_dict()
    try:
        net = pi.fid_inception_v3()
    finally:
        pi._inception_v3, pi.load_state_dict_from_url = orig
    torch.save(net.state_dict(), path)


def test_fid_equals_pytorch_fid_own_computation(tmp_path):
    from pytorch_fid.fid_score import calculate_fid_given_paths

    from runners.features import FID_WEIGHTS_FILE

    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    weights = hub / "checkpoints" / FID_WEIGHTS_FILE
    _random_fid_inception_weights(weights)
    rng = np.random.default_rng(0)
    for name, shift in (("a", 0), ("b", 60)):
        (tmp_path / name).mkdir()
        for i in range(12):
            img = np.clip(rng.integers(0, 196, size=(32, 32, 3)) + shift, 0, 255).astype(np.uint8)
            Image.fromarray(img).save(tmp_path / name / f"{i:06d}.png")
    cfg = tmp_path / "c.yml"
    cfg.write_text(yaml.safe_dump({"Dataset": {"image_size": 32, "channels": 3}, "FID": {"extractor": "inception"}}))
    assert main(["stats", "--config", str(cfg), "--source", str(tmp_path / "b"), "--out", str(tmp_path / "b.npz"),
                 "--inception-weights", str(weights), "--device", "cpu"]) == 0
    assert main(["fid", "--config", str(cfg), "--samples", str(tmp_path / "a"), "--stats", str(tmp_path / "b.npz"),
                 "--inception-weights", str(weights), "--device", "cpu"]) == 0
    ours = json.loads((tmp_path / "a" / "fid.json").read_text())["fid"]
    old_hub = torch.hub.get_dir()
    torch.hub.set_dir(str(hub))
    try:
        theirs = calculate_fid_given_paths([str(tmp_path / "a"), str(tmp_path / "b")], 6, "cpu", 2048,
                                           num_workers=0)
    finally:
        torch.hub.set_dir(old_hub)
    assert ours == pytest.approx(theirs, rel=1e-6)


def test_fid_refuses_statistics_of_another_extractor(tmp_path):
    from runners.fid import StatsError, fid_from_features, load_stats

    ref = load_stats(REPO / "models/weights/digits_fid_stats.npz")
    with pytest.raises(StatsError, match="not comparable"):
        fid_from_features(np.zeros((10, 128)), ref, "inception-v3-pool3")
    with pytest.warns(UserWarning, match="singular"):
        fid_from_features(np.random.default_rng(0).normal(size=(50, 128)), ref, ref["extractor"])


# ---------------------------------------------------------------------------------------------------------------
# bad input: one line on stderr, exit code 2, nothing left in --out

def _bad_config(tmp_path, cfg, mutate):
    data = yaml.safe_load(cfg.read_text())
    mutate(data)
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("case, args, message", [
    ("missing config", ["--config", "nope.yml"], "config file not found"),
    ("unknown key", ["--config", "UNKNOWN_KEY"], "unknown key Sample.stepz"),
    ("bad override", ["--set", "Sample.batch_size=many"], "Sample.batch_size: expected int"),
    ("unknown method", ["--method", "RK4"], "unknown method 'RK4'"),
    ("unknown convention", ["--convention", "ddpm"], "unknown convention 'ddpm'"),
    ("no samples", ["--num-samples", "0"], "--num-samples must be at least 1"),
    ("official 1000 steps", ["--steps", "1000", "--convention", "official"], "past the end"),
    ("missing checkpoint", ["--ckpt", "missing.pt"], "checkpoint not found"),
    ("checkpoint does not fit", ["--ckpt", "WIDE"], "does not fit"),
    ("wrong image size", ["--set", "Dataset.image_size=32"], "image_size=8 but Dataset.image_size=32"),
    ("NaN model", ["--ckpt", "NAN"], "non-finite"),
    ("bad precision", ["--precision", "fp8"], "precision"),
])
def test_bad_input_is_one_line_and_leaves_nothing(tiny, tmp_path, capsys, case, args, message):
    cfg, ckpt = tiny
    args = list(args)
    if "UNKNOWN_KEY" in args:
        args[args.index("UNKNOWN_KEY")] = str(_bad_config(tmp_path, cfg, lambda d: d["Sample"].update(stepz=3)))
    if "WIDE" in args:
        wide = tmp_path / "wide"
        wide.mkdir()
        args[args.index("WIDE")] = str(write_tiny(wide, ch=64)[1])
    if "NAN" in args:
        sd = torch.load(ckpt, weights_only=True)
        sd["conv_out.bias"] = torch.full_like(sd["conv_out.bias"], float("nan"))
        torch.save(sd, tmp_path / "nan.pt")
        args[args.index("NAN")] = str(tmp_path / "nan.pt")
    if "--config" not in args:
        args = ["--config", str(cfg), *args]
    out = tmp_path / "out"
    code = main(["sample", *args, "--out", str(out), "--device", "cpu"])
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # progress bars aside
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err
    assert not out.exists()  # a run that fails before its first image leaves nothing, not even a manifest


@pytest.mark.parametrize("setting, message", [
    ("Model.ch=0", "Model.ch: expected a positive int, got 0"),
    ("Model.ch_mult=[1,0]", "Model.ch_mult: expected a list of positive ints, got [1, 0]"),
    ("Model.num_res_blocks=-1", "Model.num_res_blocks: expected a positive int, got -1"),
])
def test_network_sizes_must_be_positive(tiny, tmp_path, capsys, setting, message):
    # A zero width used to build a network of empty tensors: torch's warning line, then an unrelated error.
    cfg, _ = tiny
    out = tmp_path / "out"
    code = main(["sample", "--config", str(cfg), "--set", setting, "--out", str(out), "--device", "cpu"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and err == [f"error: --set {setting}: {message}"], err
    assert not out.exists()


def test_ablation_lists_may_be_numbers_or_yaml_lists():
    # `steps: 5` or `--set FID.seeds=1` were refused as "expected str": a single value had to be quoted
    from runners.config import validate
    from runners.errors import ConfigError

    got = validate({"FID": {"steps": 5, "seeds": [0, 1], "methods": ["DDIM", "F-PNDM"]}}, "c.yml")["FID"]
    assert got == {"steps": "5", "seeds": "0,1", "methods": "DDIM,F-PNDM"}
    for bad in (True, [], [1.5], {"a": 1}):
        with pytest.raises(ConfigError, match="FID.steps: expected a comma-separated list"):
            validate({"FID": {"steps": bad}}, "c.yml")


@pytest.mark.parametrize("edit, message", [
    # PyYAML keeps the last of two equal keys: the first setting, or a whole first section, vanished unseen
    (lambda text: text.replace("  steps: 5\n", "  steps: 5\n  steps: 20\n"), "duplicate key 'steps' (line"),
    (lambda text: text + "Sample:\n  steps: 50\n", "duplicate key 'Sample' (line"),
    (lambda text: text.replace("  steps: 5\n", "\tsteps: 5\n"), "found character '\\t' that cannot start any token"),
])
def test_yaml_mistakes_are_named_with_their_line(tiny, tmp_path, capsys, edit, message):
    cfg, _ = tiny
    bad = tmp_path / "bad.yml"
    bad.write_text(edit(cfg.read_text()))
    assert bad.read_text() != cfg.read_text()
    assert sample(bad, tmp_path / "out", "--num-samples", 2) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bad}: cannot read YAML: ") and message in err[0], err


def test_output_folder_of_another_configuration_is_refused(tiny, tmp_path, capsys):
    cfg, _ = tiny
    out = tmp_path / "out"
    assert sample(cfg, out, "--num-samples", 3) == 0
    before = files_of(out)
    assert sample(cfg, out, "--num-samples", 3, "--method", "S-PNDM") == 2
    assert "different configuration (differs in: method" in capsys.readouterr().err
    assert files_of(out) == before
    # the refusal leaves the folder as it was: its manifest too, so the command that made it can still extend it
    manifest = (out / "manifest.json").read_bytes()
    assert sample(cfg, out, "--num-samples", 2) == 2
    assert "ask for at least 3" in capsys.readouterr().err
    assert (out / "manifest.json").read_bytes() == manifest and files_of(out) == before
    assert sample(cfg, out, "--num-samples", 4) == 0
    assert sample(cfg, tmp_path / "fresh", "--num-samples", 4) == 0
    assert files_of(out) == files_of(tmp_path / "fresh")


def test_a_mistyped_count_interrupted_early_can_be_taken_back(tiny, tmp_path, monkeypatch):
    """The manifest of an interrupted run records the count asked for; the images on disk, not that count, say
    whether a smaller --num-samples would drop samples."""
    cfg, _ = tiny
    out = tmp_path / "out"
    assert sample(cfg, out, "--num-samples", 3) == 0
    monkeypatch.setattr("runners.images.FLAT_LIMIT", 5)  # the mistyped count goes past it: subfolders
    restore = kill_sampling_after(monkeypatch, 1)
    assert sample(cfg, out, "--num-samples", 20) == 130
    restore()
    assert sorted(files_of(out)) == [f"000/{i:06d}.png" for i in range(3)]
    assert sample(cfg, out, "--num-samples", 4) == 0
    assert sorted(files_of(out)) == [f"{i:06d}.png" for i in range(4)] and not (out / "000").exists()
    assert sample(cfg, tmp_path / "fresh", "--num-samples", 4) == 0
    assert files_of(out) == files_of(tmp_path / "fresh")


def test_missing_inception_weights_say_which_file_goes_where(tmp_path, capsys, tiny):
    from runners.features import FID_WEIGHTS_FILE, build_extractor

    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "empty-hub"))
    try:
        with pytest.raises(FileNotFoundError, match=f"put {FID_WEIGHTS_FILE} .* at .*empty-hub.*--inception-weights"):
            build_extractor("inception", None, "cpu")
        with pytest.raises(FileNotFoundError, match="Inception weights not found"):
            build_extractor("inception", str(tmp_path / "nope.pth"), "cpu")
    finally:
        torch.hub.set_dir(old)


@pytest.mark.parametrize("how", ["flag", "config"])
def test_compile_reaches_torch_compile_and_changes_no_image(tiny, tmp_path, monkeypatch, how):
    """--compile (or Sample.compile) compiles the network; torch.compile is replaced by a recorder here because
    a real compilation takes a minute on this CPU (tests/models/test_inference.py compiles for real)."""
    cfg, _ = tiny
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda net: compiled.append(net) or net)
    extra = ["--compile"] if how == "flag" else ["--set", "Sample.compile=true"]
    assert sample(cfg, tmp_path / "plain", "--num-samples", 3) == 0
    assert compiled == []
    assert sample(cfg, tmp_path / "compiled", "--num-samples", 3, *extra) == 0
    assert len(compiled) == 1
    assert files_of(tmp_path / "plain") == files_of(tmp_path / "compiled")


def test_eta_is_accepted_wherever_sample_accepts_it(tiny, tmp_path):
    """The CLI's --eta check is samplers.plan's: DDIM on any spacing takes η, like sample() does."""
    cfg, _ = tiny
    assert sample(cfg, tmp_path / "q", "--num-samples", 2, "--method", "DDIM@quadratic", "--steps", 4,
                  "--eta", 0.5) == 0
    assert json.loads((tmp_path / "q" / "manifest.json").read_text())["identity"]["eta"] == 0.5


def test_torchrun_stops_every_rank_when_rank_0_refuses_the_folder(tiny, tmp_path):
    """Rank 0 alone checks and locks --out; when it refuses, the other rank must stop too, not wait forever."""
    cfg, _ = tiny
    out = tmp_path / "out"
    assert sample(cfg, out, "--num-samples", 3) == 0  # DDIM samples in the folder
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "main.py"), "sample", "--config", str(cfg), "--out", str(out), "--num-samples", "3",
           "--method", "S-PNDM", "--steps", "4", "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0
    assert "different configuration (differs in: method" in proc.stderr
    assert "rank 0 of this torchrun job could not start" in proc.stderr


def test_an_adaptive_solvers_nfe_is_the_mean_over_its_images(tmp_path, monkeypatch):
    """PF's NFE differs between batches (its step control sees the whole batch); the manifest held the last
    batch's. It now holds the mean over images of their batch's NFE, also across a run that extends the folder."""
    import runners.sampling

    seen = []  # (NFE, images) of every batch the runner sampled

    def spy(*args, **kwargs):
        x0, info = real(*args, **kwargs)
        seen.append((info.nfe, len(args[1])))
        return x0, info

    real = runners.sampling.sample
    monkeypatch.setattr(runners.sampling, "sample", spy)
    out = tmp_path / "pf"
    # a trained network: a random tiny one gives PF the same NFE for every batch, and the test would see nothing
    common = ["sample", "--config", str(REPO / "configs" / "digits.yml"), "--method", "PF", "--batch-size", "2",
              "--out", str(out), "--device", "cpu"]

    def mean():
        return round(sum(n * k for n, k in seen) / sum(k for _, k in seen), 1)

    assert main([*common, "--num-samples", "4"]) == 0
    assert len({n for n, _ in seen}) > 1
    m = json.loads((out / "manifest.json").read_text())
    assert (m["nfe"], m["nfe_images"]) == (mean(), 4) and m["nfe"] != seen[-1][0]
    assert main([*common, "--num-samples", "5"]) == 0  # extends the folder by one image (a batch of its own)
    m = json.loads((out / "manifest.json").read_text())
    assert len(seen) == 3 and (m["nfe"], m["nfe_images"]) == (mean(), 5)


def test_a_pf_folder_of_the_previous_version_keeps_its_nfe(tiny, tmp_path):
    """Manifests written before nfe_images existed recorded one NFE: their images count with it (the new tally
    started from none, wrote NFE null, and the ablation table then raised a TypeError)."""
    cfg, _ = tiny
    out = tmp_path / "pf"
    common = ["sample", "--config", str(cfg), "--method", "PF", "--batch-size", "2", "--out", str(out),
              "--device", "cpu"]
    assert main([*common, "--num-samples", "4"]) == 0
    path = out / "manifest.json"
    m = json.loads(path.read_text())
    new_nfe = m["nfe"]
    del m["nfe_images"]
    m["nfe"] = 123  # what the old version recorded for these 4 images
    path.write_text(json.dumps(m))
    assert main([*common, "--num-samples", "4"]) == 0  # nothing to sample
    m = json.loads(path.read_text())
    assert (m["nfe"], m["nfe_images"]) == (123, 4)
    assert main([*common, "--num-samples", "5"]) == 0
    m = json.loads(path.read_text())
    assert (m["nfe"], m["nfe_images"]) == (round((4 * 123 + new_nfe) / 5, 1), 5)  # the tiny net: one NFE


def test_pf_under_the_official_convention_on_quad_is_a_new_setting(tiny, tmp_path, capsys):
    """Since the official convention's PF integrates the released process on quad/cosine, a folder of images
    made by the earlier version (the schedule's own process) must not be extended as if it were the same."""
    cfg, _ = tiny
    data = yaml.safe_load(cfg.read_text())
    data["Schedule"]["type"] = "quad"
    quad = tmp_path / "quad.yml"
    quad.write_text(yaml.safe_dump(data))
    out = tmp_path / "pf"
    common = ["sample", "--config", str(quad), "--method", "PF", "--convention", "official", "--out", str(out),
              "--device", "cpu"]
    assert main([*common, "--num-samples", "1"]) == 0
    path = out / "manifest.json"
    m = json.loads(path.read_text())
    assert m["identity"]["pf_process"] == "released linear VP SDE"
    del m["identity"]["pf_process"]  # the identity the earlier version wrote
    path.write_text(json.dumps(m))
    capsys.readouterr()
    assert main([*common, "--num-samples", "2"]) == 2
    assert "different configuration (differs in: pf_process)" in capsys.readouterr().err


def test_the_manifest_config_of_pf_and_eta_runs_loads_again(tiny, tmp_path):
    # PF's manifest recorded Sample.steps: null and a --eta run Sample.eta, neither of which a config could hold
    cfg, _ = tiny
    for name, extra in (("pf", ["--method", "PF"]), ("eta", ["--method", "DDIM", "--eta", "0.5"])):
        first, again = tmp_path / name, tmp_path / f"{name}-again"
        assert main(["sample", "--config", str(cfg), *extra, "--num-samples", "2", "--out", str(first),
                     "--device", "cpu"]) == 0
        fed = tmp_path / f"{name}.yml"
        fed.write_text(yaml.safe_dump(json.loads((first / "manifest.json").read_text())["config"]))
        assert main(["sample", "--config", str(fed), "--out", str(again), "--device", "cpu"]) == 0
        a, b = (json.loads((d / "manifest.json").read_text())["identity"] for d in (first, again))
        assert a == b
        assert all(sample_path(first, i, 2).read_bytes() == sample_path(again, i, 2).read_bytes() for i in range(2))


def test_manifest_commit_is_read_through_git_also_with_packed_refs(tmp_path, monkeypatch):
    # only loose ref files were read: after git gc / pack-refs, or in a worktree, the manifest said "commit": null
    import shutil

    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "pack-refs", "--all"], check=True)
    head = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert _git_state(clone) == (head, False)
    (clone / "README.md").write_text("changed\n")
    assert _git_state(clone) == (head, True)
    assert _git_state(tmp_path) == (None, None)  # not a checkout
    assert versions()["commit"] == subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                                                  text=True, check=True).stdout.strip()
    # without a usable git (none installed, or one that refuses the checkout): the commit from .git's files
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", "README.md"], check=True)
    monkeypatch.setenv("PATH", str(tmp_path / "no-git-here"))
    assert _git_state(clone) == (head, None)
