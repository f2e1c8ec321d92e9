"""Bad input and interruptions, table-driven: every case is a command, the exit code it must give, a fragment of
its one-line message, and what must (or must not) exist afterwards. Then the cases that need more than a table:
two writers, stale ablation cells, NaN statistics, a lost FID, a failed start followed by the fixed command, and
internal errors that must keep their traceback."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from main import main
from runners.files import OutputLock

from .conftest import REPO, write_tiny

DIGITS_STATS = REPO / "models/weights/digits_fid_stats.npz"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny model and config, a finished 10-sample folder, and a zoo of broken files."""
    root = tmp_path_factory.mktemp("bad")
    cfg, ckpt = write_tiny(root)
    done = root / "done"
    assert main(["sample", "--config", str(cfg), "--out", str(done), "--device", "cpu", "--num-samples", "10"]) == 0
    paths = {"cfg": cfg, "ckpt": ckpt, "done": done, "root": root}

    def folder_with(name, write):
        folder = root / name
        shutil.copytree(done, folder)
        (folder / "manifest.json").unlink()  # a plain image folder
        write(folder / "000003.png")
        paths[name] = folder

    folder_with("garbage_png", lambda p: p.write_bytes(b"not a png at all"))
    folder_with("truncated_png", lambda p: p.write_bytes(p.read_bytes()[:30]))
    folder_with("big_png", lambda p: Image.fromarray(np.zeros((16, 16), np.uint8)).save(p))
    # pixels a silent conversion would change: 16-bit values clipped at 255, colour averaged to grey
    folder_with("deep_png", lambda p: Image.fromarray((np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)).save(p))
    folder_with("rgb_png", lambda p: Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(p))
    (root / "in_the_way" / "manifest.json").mkdir(parents=True)
    paths["in_the_way"] = root / "in_the_way"
    (root / "empty").mkdir()
    paths["empty"] = root / "empty"
    unfinished = root / "unfinished"
    shutil.copytree(done, unfinished)
    manifest = json.loads((unfinished / "manifest.json").read_text())
    (unfinished / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    paths["unfinished"] = unfinished
    for name, text in (("broken_manifest", "{broken"),
                       ("countless_manifest", json.dumps({k: v for k, v in manifest.items() if k != "num_samples"}))):
        shutil.copytree(done, root / name)
        (root / name / "manifest.json").write_text(text)
        paths[name] = root / name
    one = root / "one_image"
    one.mkdir()
    shutil.copy(done / "000000.png", one / "000000.png")
    paths["one_image"] = one
    ref = dict(np.load(DIGITS_STATS))
    for name, change in {"nan_stats": lambda d: d["mu"].__setitem__(0, np.nan),
                         "inf_sigma": lambda d: d["sigma"].__setitem__((0, 0), np.inf),
                         "2d_mu": lambda d: d.__setitem__("mu", d["mu"][None]),
                         "square_mismatch": lambda d: d.__setitem__("sigma", d["sigma"][:5, :5]),
                         "string_mu": lambda d: d.__setitem__("mu", np.array(["a"] * 128)),
                         "no_sigma": lambda d: d.pop("sigma"),
                         "asymmetric_sigma": lambda d: d.__setitem__("sigma", d["sigma"] + np.triu(np.ones((128, 128))))
                         }.items():
        data = {k: v.copy() for k, v in ref.items()}
        change(data)
        np.savez(root / f"{name}.npz", **data)
        paths[name] = root / f"{name}.npz"
    for name, section, key, value in (("seed_cfg", "Sample", "seed", -1), ("steps_cfg", "FID", "steps", "5,x"),
                                      ("ckpt_cfg", "Model", "ckpt", str(root / "none.pt"))):
        bad = yaml.safe_load(cfg.read_text())
        bad.setdefault(section, {})[key] = value
        (root / f"{name}.yml").write_text(yaml.safe_dump(bad))
        paths[name] = root / f"{name}.yml"
    (root / "garbage.bin").write_bytes(bytes(range(256)) * 7)
    paths["garbage"] = root / "garbage.bin"
    (root / "a_file").write_text("x")
    paths["a_file"] = root / "a_file"
    sd = torch.load(ckpt, weights_only=True)
    sd["conv_out.bias"] = torch.full_like(sd["conv_out.bias"], float("nan"))
    torch.save(sd, root / "nan.pt")
    paths["nan_ckpt"] = root / "nan.pt"
    weights = torch.load(ckpt, weights_only=True)
    torch.save({"format": "pndm-train/1", "model": weights, "ema": weights, "step": 1,
                "config": {"Schedule": {"type": "cosine", "diffusion_step": 1000}}}, root / "cosine_trained.pt")
    paths["cosine_trained"] = root / "cosine_trained.pt"
    shutil.copy(ckpt, root / "ckpt_copy.pt")
    paths["ckpt_copy"] = root / "ckpt_copy.pt"
    return paths


@dataclass
class Case:
    name: str
    argv: list  # {key} placeholders are filled from env; {out} is a fresh path per case
    code: int
    message: str
    absent: list = field(default_factory=lambda: ["{out}"])  # paths that must not exist afterwards
    present: list = field(default_factory=list)


S = ["sample", "--config", "{cfg}", "--device", "cpu", "--out", "{out}", "--num-samples", "4"]
A = ["ablate", "--config", "{cfg}", "--device", "cpu", "--out", "{out}", "--num-samples", "4", "--steps", "2",
     "--methods", "DDIM"]
F = ["fid", "--config", "{cfg}", "--device", "cpu"]
T = ["stats", "--config", "{cfg}", "--device", "cpu"]
G = ["tune-grid", "--config", "{cfg}", "--device", "cpu", "--method", "DDIM", "--nfe", "3", "--out", "{out}"]

CASES = [
    # arguments checked before --out is touched
    Case("negative eta", S + ["--eta", "-1"], 2, "eta must be a number >= 0"),
    Case("eta on another method", S + ["--method", "F-PNDM", "--eta", "0.5"], 2, "eta applies to DDIM only"),
    Case("infinite eta", S + ["--eta", "inf"], 2, "eta must be a number >= 0 and finite"),
    Case("negative seed", S + ["--seed", "-3"], 2, "--seed must be at least 0"),
    Case("zero steps", S + ["--steps", "0"], 2, "steps must be at least 1"),
    Case("too many steps", S + ["--steps", "1001"], 2, "exceeds the schedule's 1000 timesteps"),
    Case("unknown spacing", S + ["--method", "DDIM@nonsense"], 2, "unknown spacing 'nonsense'"),
    Case("schedule out of range", S + ["--set", "Schedule.beta_end=2"], 2, "Schedule: betas must lie in (0, 1)"),
    Case("one-step schedule", S + ["--set", "Schedule.diffusion_step=1"], 2, "Schedule: num_timesteps"),
    Case("unknown extractor", S + ["--fid", "--set", "FID.extractor=clip"], 2, "unknown FID.extractor 'clip'"),
    Case("FID of one sample", S[:-2] + ["--num-samples", "1", "--fid"], 2, "--fid needs at least 2 samples"),
    Case("empty out", S[:-4] + ["--out", "", "--num-samples", "4"], 2, "--out is empty", absent=[]),
    Case("device without a backend", S + ["--device", "mps"], 2, "--device mps"),
    Case("zero batch", S + ["--batch-size", "0"], 2, "--batch-size must be at least 1"),
    Case("zero threads", S + ["--threads", "0"], 2, "--threads must be at least 1"),
    Case("PF with steps", S + ["--method", "PF", "--steps", "5"], 2, "takes no --steps"),
    Case("malformed --set", S + ["--set", "Model.ch_mult=[1,"], 2, "not valid YAML"),
    Case("--set without value", S + ["--set", "Model.ch"], 2, "expected Section.key=value"),
    Case("bad Model section", S + ["--set", "Model.struc=UNet3D"], 2, "unsupported Model.struc"),
    Case("image size the network cannot take", S + ["--set", "Model.image_size=7", "--set", "Dataset.image_size=7"],
         2, "cannot run on 1×7×7 images"),
    Case("output that is not ε-shaped", S + ["--set", "Model.out_ch=2"], 2, "ε must have the input's shape"),
    Case("device that is no device", S + ["--device", "gpu0"], 2, "not a device name"),
    Case("device not here", S + ["--device", "cuda:7"], 2, "--device cuda:7"),
    Case("trusted garbage checkpoint", S + ["--ckpt", "{garbage}", "--trust-checkpoint"], 2, "garbage.bin"),
    Case("untrusted garbage checkpoint", S + ["--ckpt", "{garbage}"], 2, "garbage.bin"),
    Case("out is a file", S[:-4] + ["--out", "{a_file}", "--num-samples", "4"], 2, "is a file, not a folder",
         absent=[]),
    Case("out cannot be created", S[:-4] + ["--out", "/proc/pndm-no-such/out", "--num-samples", "4"], 2,
         "cannot create", absent=[]),
    Case("out is read-only", S[:-4] + ["--out", "/sys/kernel", "--num-samples", "4"], 2, "cannot write to /sys/kernel",
         absent=[]),  # sysfs refuses new files even to root
    Case("stats missing before sampling", S + ["--fid", "--stats", "{root}/none.npz"], 2,
         "statistics file not found"),
    Case("extractor weights missing before sampling",
         S + ["--fid", "--set", "FID.extractor_weights={root}/none.pt"], 2, "digits classifier weights not found"),
    Case("extractor weights unreadable before sampling", S + ["--fid", "--set", "FID.extractor_weights={garbage}"],
         2, "cannot load the digits classifier weights"),
    Case("NaN statistics before sampling", S + ["--fid", "--stats", "{nan_stats}"], 2, "NaN"),
    Case("NaN model leaves nothing", S + ["--ckpt", "{nan_ckpt}"], 2, "non-finite"),
    Case("checkpoint trained under another schedule", S + ["--ckpt", "{cosine_trained}"], 2,
         "trained under another noise schedule than the config's (type cosine vs linear"),
    Case("schedule that leaves no signal", S + ["--set", "Schedule.beta_end=0.7"], 2, "alpha_bar underflows to 0"),
    Case("statistics without --fid", S + ["--stats", "{nan_stats}"], 2, "--stats is for the FID: add --fid"),
    Case("manifest's name taken by a folder", S[:-4] + ["--out", "{in_the_way}", "--num-samples", "4"], 2,
         "a folder of that name is in the way", absent=[], present=["{in_the_way}/manifest.json"]),
    # fid
    Case("fid: garbage PNG", F + ["--samples", "{garbage_png}"], 2, "cannot read image", absent=[]),
    Case("fid: truncated PNG", F + ["--samples", "{truncated_png}"], 2, "cannot read image", absent=[]),
    Case("fid: image of the wrong size", F + ["--samples", "{big_png}"], 2, "is 16×16 pixels", absent=[]),
    Case("fid: 16-bit PNG", F + ["--samples", "{deep_png}"], 2,
         "is a 16-bit grayscale image; the config (Dataset.channels 1) needs an 8-bit grayscale image", absent=[]),
    Case("fid: RGB PNG for a grayscale config", F + ["--samples", "{rgb_png}"], 2, "is an 8-bit RGB image",
         absent=[]),
    Case("fid: asymmetric sigma", F + ["--samples", "{done}", "--stats", "{asymmetric_sigma}"], 2,
         "sigma is not a covariance matrix (asymmetric", absent=[]),
    Case("fid: NaN statistics", F + ["--samples", "{done}", "--stats", "{nan_stats}"], 2, "NaN", absent=[]),
    Case("fid: infinite sigma", F + ["--samples", "{done}", "--stats", "{inf_sigma}"], 2, "NaN or infinite",
         absent=[]),
    Case("fid: 2-d mu", F + ["--samples", "{done}", "--stats", "{2d_mu}"], 2, "must be a vector", absent=[]),
    Case("fid: sigma of another size", F + ["--samples", "{done}", "--stats", "{square_mismatch}"], 2,
         "square covariance", absent=[]),
    Case("fid: string mu", F + ["--samples", "{done}", "--stats", "{string_mu}"], 2, "numeric", absent=[]),
    Case("fid: no sigma", F + ["--samples", "{done}", "--stats", "{no_sigma}"], 2, "no 'mu'/'sigma'", absent=[]),
    Case("fid: statistics not an npz", F + ["--samples", "{done}", "--stats", "{garbage}"], 2,
         "cannot read statistics", absent=[]),
    Case("fid: statistics are a folder", F + ["--samples", "{done}", "--stats", "{root}"], 2, "is a folder",
         absent=[]),
    Case("fid: empty folder", F + ["--samples", "{empty}"], 2, "no images in", absent=[]),
    Case("fid: unfinished run", F + ["--samples", "{unfinished}"], 2, "unfinished sampling run", absent=[]),
    Case("fid: damaged manifest", F + ["--samples", "{broken_manifest}"], 2, "is not a readable JSON object",
         absent=[]),
    Case("fid: manifest without a count", F + ["--samples", "{countless_manifest}"], 2,
         "records no sample count", absent=[]),
    Case("fid: missing folder", F + ["--samples", "{root}/none"], 2, "samples folder not found", absent=[]),
    Case("fid: bad extractor weights", F + ["--samples", "{done}", "--set", "FID.extractor_weights={garbage}"], 2,
         "cannot load the digits classifier weights", absent=[]),
    # stats
    Case("stats: out is a folder", T + ["--source", "{done}", "--out", "{root}"], 2, "is a folder", absent=[]),
    Case("stats: read-only place", T + ["--source", "{done}", "--out", "/sys/kernel/stats.npz"], 2,
         "cannot write to /sys/kernel/stats.npz", absent=[]),
    Case("stats: garbage PNG", T + ["--source", "{garbage_png}", "--out", "{out}"], 2, "cannot read image"),
    Case("stats: a failed run leaves no folders", T + ["--source", "{garbage_png}", "--out", "{out}/a/b/s.npz"], 2,
         "cannot read image"),
    Case("stats: out is a checkpoint", T + ["--source", "{done}", "--out", "{ckpt_copy}"], 2,
         "exists and is not a statistics file", absent=[], present=["{ckpt_copy}"]),
    # CIFAR-10/digits yield their own size whatever Dataset.image_size says: statistics of another shape
    Case("stats: dataset of another image size", T + ["--out", "{out}", "--set", "Dataset.image_size=16",
                                                      "--set", "Model.image_size=16"], 2,
         "DIGITS:train gives 1×8×8 images but the config's are 1×16×16"),
    # training read the train split whatever Dataset.split said
    Case("train: another split", ["train", "--config", "{cfg}", "--device", "cpu", "--workdir", "{out}",
                                  "--max-steps", "1", "--set", "Train.batch_size=4", "--set", "Dataset.split=test"], 2,
         "Dataset.split is 'test': training reads the train split"),
    Case("stats: --split with --source", T + ["--source", "{done}", "--split", "train", "--out", "{out}"], 2,
         "--split names a split of the config's dataset"),
    # tune-grid
    Case("tune-grid: --loss with the FID objective", G + ["--objective", "fid", "--loss", "mse"], 2,
         "--loss is for --objective teacher"),
    Case("tune-grid: --stats with the teacher objective", G + ["--stats", "{nan_stats}"], 2,
         "--stats is for --objective fid"),
    Case("tune-grid: the released convention", G + ["--set", "Sample.convention=official"], 2,
         "tune-grid learns for the standard convention"),
    Case("tune-solver: too few noises for its start grid's split",
         ["tune-solver", "--config", "{cfg}", "--device", "cpu", "--nfe", "3", "--num-samples", "5", "--holdout", "2",
          "--out", "{out}"], 2, "--num-samples 5: x_T has 5 samples: too few to split"),
    Case("tune-grid: a failed run leaves no folders", G[:-2] + ["--out", "{out}/g.json", "--num-samples", "2"], 2,
         "too few to split"),
    Case("stats: a split the dataset lacks", T + ["--out", "{out}", "--split", "test"], 2,
         "Dataset DIGITS has no split 'test'"),
    Case("sample: text file as checkpoint", S + ["--ckpt", "{cfg}"], 2, "neither a zip archive nor a pickle"),
    Case("stats: bad Inception weights", T + ["--source", "{done}", "--out", "{out}", "--set", "FID.extractor=inception",
                                             "--inception-weights", "{garbage}"], 2,
         "cannot load the FID Inception weights"),
    Case("stats: one image", T + ["--source", "{one_image}", "--out", "{out}"], 2, "at least 2 images"),
    Case("stats: zero batch", T + ["--out", "{out}", "--batch-size", "0"], 2, "--batch-size must be at least 1"),
    Case("stats: --batch-size with --source changes nothing", T + ["--source", "{done}", "--out", "{out}",
                                                                   "--batch-size", "8"], 2,
         "--batch-size is the dataset loader's batch"),

    # ablate
    Case("ablate: empty steps", A[:-4] + ["--steps", ",", "--methods", "DDIM"], 2, "names nothing"),
    Case("ablate: steps not numbers", A[:-4] + ["--steps", "5,x", "--methods", "DDIM"], 2, "comma-separated"),
    Case("ablate: negative reference samples", A + ["--reference-samples", "-4"], 2,
         "--reference-samples must be at least 1"),
    Case("ablate: zero reference samples", A + ["--reference-samples", "0"], 2,
         "--reference-samples must be at least 1"),
    Case("ablate: one sample", A[:-4] + ["--num-samples", "1", "--steps", "2", "--methods", "DDIM"], 2,
         "at least 2 for a FID"),
    Case("ablate: negative seed", A + ["--seeds", "0,-1"], 2, "--seeds must be at least 0"),
    Case("ablate: --seed (sample's flag) was ignored", A + ["--seed", "7"], 2, "ablate takes --seeds"),
    # a bad config value is named by its key and file, not by a flag the user never typed
    Case("config: negative Sample.seed", S[:2] + ["{seed_cfg}"] + S[3:], 2,
         "Sample.seed in {seed_cfg} must be at least 0, got -1"),
    Case("--set: zero Sample.batch_size", S + ["--set", "Sample.batch_size=0"], 2,
         "--set Sample.batch_size must be at least 1"),
    Case("config: FID.steps not numbers", A[:2] + ["{steps_cfg}"] + A[3:-4] + ["--methods", "DDIM"], 2,
         "FID.steps in {steps_cfg} '5,x': expected a comma-separated list of ints"),
    Case("--set: negative FID.seeds", A + ["--set", "FID.seeds=-1"], 2, "--set FID.seeds must be at least 0"),
    Case("config: missing Model.ckpt", S[:2] + ["{ckpt_cfg}"] + S[3:], 2,
         "checkpoint not found: {root}/none.pt (Model.ckpt in {ckpt_cfg})"),
    Case("--set: missing FID.stats", S + ["--fid", "--set", "FID.stats={root}/none.npz"], 2,
         "statistics file not found: {root}/none.npz (--set FID.stats)"),
    Case("ablate: unknown method", A[:-2] + ["--methods", "DDIM,RK9"], 2, "unknown method 'RK9'"),
]


def fill(text: str, env: dict, out: Path) -> str:
    return text.format(out=out, **{k: str(v) for k, v in env.items()})


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, env, tmp_path, capsys):
    out = tmp_path / "out"
    code = main([fill(a, env, out) for a in case.argv])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "img/s" not in line
           and "features" not in line]
    assert code == case.code, err
    assert len(err) == 1 and err[0].startswith("error:") and fill(case.message, env, out) in err[0], err
    for path in case.absent:
        assert not Path(fill(path, env, out)).exists(), path
    assert not list(tmp_path.rglob(".*.tmp")) and not list(env["root"].rglob(".*.tmp"))


@pytest.mark.parametrize("argv", [T + ["--source", "{done}", "--out", "{out}"], F + ["--samples", "{done}"],
                                  G + ["--iterations", "1"]], ids=["stats", "fid", "tune-grid"])
def test_single_process_commands_refuse_torchrun(argv, env, tmp_path, capsys, monkeypatch):
    """Under torchrun every process did the whole job and they raced for one output file."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    out = tmp_path / "out"
    assert main([fill(a, env, out) for a in argv]) == 2
    assert "runs in one process; start it with python, not torchrun" in capsys.readouterr().err
    assert not out.exists()


def test_another_tools_manifest_does_not_make_a_folder_a_sampling_run(env, tmp_path, capsys):
    folder = tmp_path / "theirs"
    shutil.copytree(env["done"], folder)
    (folder / "manifest.json").unlink()
    fid = [fill(a, env, tmp_path) for a in F] + ["--samples", str(folder)]
    assert main(fid) == 0
    plain = json.loads((folder / "fid.json").read_text())["fid"]
    (folder / "fid.json").unlink()
    (folder / "manifest.json").write_text(json.dumps({"name": "my dataset", "files": 10}))
    assert main(fid) == 0
    assert json.loads((folder / "fid.json").read_text())["fid"] == plain


# ---------------------------------------------------------------------------------------------------------------
# one writer per output


@pytest.mark.parametrize("command", ["sample", "ablate", "stats"])
def test_a_second_writer_is_refused_and_a_stale_lock_is_not(command, env, tmp_path, capsys):
    out = tmp_path / ("out.npz" if command == "stats" else "out")
    argv = {"sample": S, "ablate": A, "stats": T + ["--source", "{done}", "--out", "{out}"]}[command]
    argv = [fill(a, env, out) for a in argv]
    lock = OutputLock.for_file(out) if command == "stats" else OutputLock.for_folder(out)
    with lock:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "being written by another run (pid" in err and len(err.strip().splitlines()) == 1
    # a lock file left by a killed process (no live holder) does not block the rerun
    lock.lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock.lock_file.write_text("pid 999999, killed")
    assert main(argv) == 0
    assert out.exists() and not lock.lock_file.exists()


# ---------------------------------------------------------------------------------------------------------------
# results that must never be wrong, nor lost


def test_fid_is_printed_when_fid_json_cannot_be_written(env, tmp_path, capsys):
    folder = tmp_path / "s"
    shutil.copytree(env["done"], folder)
    (folder / "fid.json").mkdir()  # a folder where the file should go: the write fails
    assert main(["fid", "--config", str(env["cfg"]), "--samples", str(folder), "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    assert "FID " in captured.out and "the FID above is not saved" in captured.err


def test_failed_start_does_not_block_the_fixed_command(env, tmp_path):
    out = tmp_path / "out"
    base = ["sample", "--config", str(env["cfg"]), "--out", str(out), "--device", "cpu", "--num-samples", "3"]
    assert main(base + ["--ckpt", str(env["nan_ckpt"])]) == 2
    assert not out.exists()
    out.mkdir()  # an existing, empty folder: a failed run must not leave a manifest in it either
    assert main(base + ["--ckpt", str(env["nan_ckpt"])]) == 2
    assert list(out.iterdir()) == []
    assert main(base + ["--method", "S-PNDM", "--steps", "3"]) == 0
    assert json.loads((out / "manifest.json").read_text())["method"] == "S-PNDM"


def test_internal_errors_keep_their_traceback(env, tmp_path, monkeypatch):
    import runners.sampling

    def broken(*a, **k):
        raise ValueError("an internal bug, not the user's fault")

    monkeypatch.setattr(runners.sampling, "sample", broken)
    with pytest.raises(ValueError, match="internal bug"):
        main(["sample", "--config", str(env["cfg"]), "--out", str(tmp_path / "o"), "--device", "cpu"])


@pytest.fixture(scope="module")
def ablated(env, tmp_path_factory):
    out = tmp_path_factory.mktemp("abl") / "abl"
    argv = ["ablate", "--config", str(env["cfg"]), "--device", "cpu", "--out", str(out), "--num-samples", "6",
            "--steps", "2", "--methods", "DDIM", "--reference-samples", "4"]
    assert main(argv) == 0
    return out, argv


def _cell(out):
    return json.loads((out / "DDIM-2" / "seed0" / "cell.json").read_text())


@pytest.mark.parametrize("change, differs", [
    (["--convention", "official"], "convention"),
    (["--precision", "bf16"], "precision"),
    (["--set", "Schedule.beta_end=0.03"], "Schedule"),
    (["--seeds", "0", "--set", "Model.dropout=0.1"], "Model"),
])
def test_ablation_refuses_cells_sampled_under_other_settings(ablated, change, differs, tmp_path, capsys):
    out, argv = ablated
    before = _cell(out)
    assert main(argv + change) == 2
    err = capsys.readouterr().err
    assert f"differs in: {differs}" in err and len(err.strip().splitlines()) == 1
    assert _cell(out) == before


@pytest.mark.parametrize("change", [["--reference-samples", "5"], ["--stats", "OTHER"], ["--ckpt-copy"]])
def test_ablation_rescores_or_resamples_when_a_score_setting_changes(ablated, change, env, tmp_path):
    out, argv = ablated
    copy = tmp_path / "abl"
    shutil.copytree(out, copy)
    argv = [str(copy) if a == str(out) else a for a in argv]
    before = _cell(copy)
    if change == ["--stats", "OTHER"]:  # statistics of other images: the FID must be recomputed
        other = tmp_path / "other.npz"
        assert main(["stats", "--config", str(env["cfg"]), "--source", str(env["done"]), "--out", str(other),
                     "--device", "cpu"]) == 0
        change = ["--stats", str(other)]
    if change == ["--ckpt-copy"]:  # the same weights under another name: same identity, the cell is reused
        shutil.copy(env["ckpt"], tmp_path / "same.pt")
        change = ["--ckpt", str(tmp_path / "same.pt")]
    assert main(argv + change) == 0
    after = _cell(copy)
    if "--reference-samples" in change:
        assert after["rms"] != before["rms"] and after["fid"] == before["fid"]
    elif "--stats" in change:
        assert after["fid"] != before["fid"] and after["rms"] == before["rms"]
    else:
        assert after == before


def test_fid_has_no_batch_size_flag(capsys):
    # it was accepted, checked and never used (the feature network always sees chunks of 64)
    with pytest.raises(SystemExit) as e:
        main(["fid", "--config", "x.yml", "--samples", "x", "--batch-size", "8"])
    assert e.value.code == 2 and "unrecognized arguments: --batch-size 8" in capsys.readouterr().err


def test_ablate_help_does_not_offer_the_seed_flag_it_refuses(capsys):
    with pytest.raises(SystemExit):
        main(["ablate", "--help"])
    out = capsys.readouterr().out
    assert "--seeds" in out and "--seed " not in out and "--seed=" not in out


def test_a_network_returning_nan_in_ablates_reference_solve_is_one_line(env, tmp_path, monkeypatch, capsys):
    # the cells sampled fine, the reference's many-step solve met NaN at t in (401, 449): a traceback, exit 1
    import runners.ablate

    real = runners.ablate.load_eps

    def nan_between(*a, **k):
        eps = real(*a, **k)
        return lambda x, t: torch.where(((t > 401) & (t < 449)).view(-1, 1, 1, 1), torch.nan, eps(x, t))

    monkeypatch.setattr(runners.ablate, "load_eps", nan_between)
    code = main(["ablate", "--config", str(env["cfg"]), "--device", "cpu", "--out", str(tmp_path / "a"),
                 "--methods", "DDIM", "--steps", "5", "--num-samples", "4", "--reference-samples", "2"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(err) == 1 and "non-finite ε" in err[0], err
