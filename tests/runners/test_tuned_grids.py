"""Tuned time grids on the command line: grid files read by sample/ablate --timesteps-file (and
Sample.timesteps_file), the refusals that keep a grid with the network and method it was tuned for, and
main.py tune-grid end to end."""
import json
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from main import main
from runners.images import sample_path
from runners.setup import sha256_file

from .conftest import write_tiny

GRID = [999.0, 610.5, 300.25, 90.0, 12.5, -1.0]


def grid_file(path: Path, ckpt: Path, method="DDIM", timesteps=GRID, **extra) -> Path:
    data = {"format": "pndm-time-grid/1", "timesteps": timesteps, "method": method, "nfe": len(timesteps) - 1,
            "checkpoint_sha256": sha256_file(ckpt),
            "schedule": {"type": "linear", "beta_start": 1e-4, "beta_end": 0.02, "diffusion_step": 1000}, **extra}
    path.write_text(json.dumps(data))
    return path


def unrecorded(path: Path) -> Path:
    """The grid file without the checkpoint it was tuned for."""
    data = json.loads(path.read_text())
    del data["checkpoint_sha256"]
    path.write_text(json.dumps(data))
    return path


def run(*args):
    return main([*map(str, args), "--device", "cpu"])


def test_sample_on_a_tuned_grid_matches_the_library_and_records_the_grid(tiny, tmp_path):
    from models import load_model
    from runners.images import to_uint8
    from runners.sampling import initial_noise
    from samplers import NoiseSchedule, sample

    cfg, ckpt = tiny
    out = tmp_path / "out"
    assert run("sample", "--config", cfg, "--out", out, "--num-samples", 3,
               "--timesteps-file", grid_file(tmp_path / "g.json", ckpt)) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert (m["method"], m["steps"], m["nfe"]) == ("DDIM", 5, 5)
    assert m["identity"]["timesteps"] == GRID
    model = load_model(yaml.safe_load(cfg.read_text()), ckpt)
    with torch.no_grad():
        x0 = sample(model, initial_noise(range(3), (1, 8, 8), 0), NoiseSchedule("linear"), "DDIM", timesteps=GRID)
    for i, expected in enumerate(to_uint8(x0, True)):
        with Image.open(sample_path(out, i, 3)) as im:
            got = torch.from_numpy(__import__("numpy").array(im))
        assert (got.int() - expected[0].int()).abs().max() <= 1  # channels-last fast path vs plain module


def test_the_config_key_names_a_grid_too(tiny, tmp_path):
    cfg, ckpt = tiny
    path = grid_file(tmp_path / "g.json", ckpt, method="UniPC-3(bh2)")
    out = tmp_path / "out"
    assert run("sample", "--config", cfg, "--out", out, "--num-samples", 2,
               "--set", f"Sample.timesteps_file={path}") == 0
    m = json.loads((out / "manifest.json").read_text())
    assert (m["method"], m["steps"]) == ("UniPC-3(bh2)", 5)
    # null switches the config's grid off again, so the method's own grid and --steps apply
    assert run("sample", "--config", cfg, "--out", tmp_path / "plain", "--num-samples", 2, "--method", "DDIM",
               "--steps", 4, "--set", f"Sample.timesteps_file={path}", "--set", "Sample.timesteps_file=null") == 0
    m = json.loads((tmp_path / "plain" / "manifest.json").read_text())
    assert (m["method"], m["steps"]) == ("DDIM", 4)


@pytest.mark.parametrize("case, message", [
    ("checkpoint", "tuned for checkpoint"),
    ("method", "tuned for DDIM, not S-PNDM"),
    ("schedule", "tuned for schedule"),
    ("noise_schedule", "tuned for schedule"),  # improved-diffusion's spelling of cosine was read as linear
    ("unrecorded", "does not record the checkpoint"),  # a hand-written grid: provenance unknown
    # Model.ema picks another network from the same file: a grid tuned on one was accepted for the other
    ("raw_weights", "tuned on the checkpoint's raw weights (Model.ema: false), this run uses its EMA weights"),
    ("for_raw_weights", "tuned on the checkpoint's EMA weights, this run uses its raw weights"),
])
def test_a_grid_for_another_network_method_or_schedule_needs_force(tiny, tmp_path, capsys, case, message):
    cfg, ckpt = tiny
    (tmp_path / "other").mkdir()
    _, other_ckpt = write_tiny(tmp_path / "other", seed=1)
    path = {"checkpoint": lambda: grid_file(tmp_path / "g.json", other_ckpt),
            "method": lambda: grid_file(tmp_path / "g.json", ckpt),
            "schedule": lambda: grid_file(tmp_path / "g.json", ckpt, schedule={"type": "cosine"}),
            "noise_schedule": lambda: grid_file(tmp_path / "g.json", ckpt, schedule={"noise_schedule": "cosine"}),
            "unrecorded": lambda: unrecorded(grid_file(tmp_path / "g.json", ckpt)),
            "raw_weights": lambda: grid_file(tmp_path / "g.json", ckpt, config={"Model": {"ema": False}}),
            "for_raw_weights": lambda: grid_file(tmp_path / "g.json", ckpt)}[case]()
    extra = {"method": ("--method", "S-PNDM"), "for_raw_weights": ("--set", "Model.ema=false")}.get(case, ())
    assert run("sample", "--config", cfg, "--out", tmp_path / "out", "--num-samples", 2, "--timesteps-file", path,
               *extra) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "--force" in err
    assert not (tmp_path / "out").exists()
    assert run("sample", "--config", cfg, "--out", tmp_path / "out", "--num-samples", 2, "--timesteps-file", path,
               "--force", *extra) == 0


@pytest.mark.parametrize("content, extra, message", [
    ("not json", (), "not a grid file"),
    (json.dumps({"timesteps": [999, 500, -1]}), (), "not a grid file"),
    (json.dumps({"timesteps": ["a"], "method": "DDIM"}), (), "list of numbers"),
    (json.dumps({"timesteps": [999, 999, -1], "method": "DDIM"}), (), "strictly decreasing"),
    (json.dumps({"timesteps": [1200, 500, -1], "method": "DDIM"}), (), "beyond"),
    (json.dumps({"timesteps": [999, 500, -1], "method": "DDIM"}), ("--steps", 5), "--steps and a tuned grid"),
    (json.dumps({"timesteps": [999, 500, -1], "method": "DDIM"}), ("--method", "DDIM@karras"), "not 'DDIM@karras'"),
    (json.dumps({"timesteps": [999, 500, -1], "method": "PF"}), (), "PF is an adaptive solver"),
    # a grid that stops short of the data would return noisy images and exit 0
    (json.dumps({"timesteps": [999, 600, 500], "method": "DDIM"}), (), "must end at -1"),
    (json.dumps({"timesteps": [999, 600, 0], "method": "UniPC-3(bh2)"}), (), "must end at -1"),
    (json.dumps({"timesteps": [-1], "method": "DDIM"}), (), "at least two entries"),
    (json.dumps({"timesteps": ["999", "500", -1], "method": "DDIM"}), (), "list of numbers"),
    (json.dumps({"timesteps": [999, True, -1], "method": "DDIM"}), (), "list of numbers"),
    (json.dumps({"timesteps": [999, 500, -1], "method": "DDPM"}), (), "DDPM is stochastic"),
    (json.dumps({"timesteps": [999, 500, -1], "method": "DDIM", "nfe": "2"}), (), "'nfe' is '2'"),
    (json.dumps({"timesteps": [999, 500, -1], "method": "DDIM", "nfe": 7}), (), "makes 2 model evaluations"),
    (json.dumps({"timesteps": [999, 500, -1], "method": "DDIM", "checkpoint_sha256": 12345}), (),
     "'checkpoint_sha256' must be"),
    (json.dumps({"timesteps": [999, 500, -1], "method": "DDIM", "schedule": "linear"}), (), "'schedule' must be"),
    (json.dumps({"timesteps": [999, 500, -1], "method": "DDIM", "schedule": [1, 2]}), (), "'schedule' must be"),
    (json.dumps({"timesteps": [999, 500, -1], "method": "DDIM", "schedule": {"beta_start": "abc"}}), (),
     "'schedule' must be"),
])
def test_bad_grid_files_are_one_line(tiny, tmp_path, capsys, content, extra, message):
    cfg, _ = tiny
    path = tmp_path / "g.json"
    path.write_text(content)
    assert run("sample", "--config", cfg, "--out", tmp_path / "out", "--num-samples", 2,
               "--timesteps-file", path, *extra) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_missing_grid_file(tiny, tmp_path, capsys):
    cfg, _ = tiny
    assert run("sample", "--config", cfg, "--out", tmp_path / "out", "--timesteps-file", tmp_path / "nope.json") == 2
    assert "grid file not found" in capsys.readouterr().err


def test_ablate_adds_a_tuned_cell_next_to_the_fixed_ones(tiny, tmp_path, capsys):
    cfg, ckpt = tiny
    path = grid_file(tmp_path / "g.json", ckpt)
    out = tmp_path / "abl"
    args = ("ablate", "--config", cfg, "--out", out, "--methods", "DDIM", "--steps", "5", "--num-samples", 4,
            "--reference-samples", 2, "--timesteps-file", path)
    assert run(*args) == 0
    assert (out / "DDIM-5" / "seed0" / "cell.json").is_file()
    tuned = json.loads((out / "DDIM@tuned-5" / "seed0" / "cell.json").read_text())
    assert tuned["method"] == "DDIM@tuned" and tuned["nfe"] == 5
    assert "DDIM@tuned" in (out / "results.md").read_text()
    # each cell's manifest config names its own grid file, or none: fed back, each remakes its own images
    sample_of = {name: json.loads((out / name / "seed0" / "manifest.json").read_text())["config"]["Sample"]
                 for name in ("DDIM-5", "DDIM@tuned-5")}
    assert sample_of["DDIM-5"]["timesteps_file"] is None
    assert sample_of["DDIM@tuned-5"]["timesteps_file"] == str(path.resolve())
    capsys.readouterr()
    assert run(*args) == 0  # cached: nothing resampled
    assert json.loads((out / "DDIM@tuned-5" / "seed0" / "cell.json").read_text()) == tuned


def test_tune_grid_end_to_end_then_sample_with_it(tiny, tmp_path, capsys):
    from runners.setup import sha256_file

    cfg, ckpt = tiny
    out = tmp_path / "grid.json"
    assert run("tune-grid", "--config", cfg, "--method", "DDIM", "--nfe", 4, "--num-samples", 8,
               "--eval-samples", 4, "--iterations", 2, "--out", out) == 0
    g = json.loads(out.read_text())
    assert (g["method"], g["nfe"], g["steps"]) == ("DDIM", 4, 4)
    ts = g["timesteps"]
    assert ts[0] == 999 and ts[-1] == -1 and all(a > b for a, b in zip(ts, ts[1:])) and ts[-2] >= 0
    assert g["checkpoint_sha256"] == sha256_file(ckpt)
    assert g["loss"]["held_out_loss"] <= g["loss"]["held_out_loss_start"]
    fixed = g["comparison"]["fixed"]
    assert "DDIM@paper" in fixed and "DDIM@quadratic" in fixed and g["comparison"]["best_fixed"] in fixed
    assert "best fixed spacing" in capsys.readouterr().out
    assert run("sample", "--config", cfg, "--out", tmp_path / "s", "--num-samples", 2, "--timesteps-file", out) == 0
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert (m["method"], m["nfe"], m["identity"]["timesteps"]) == ("DDIM", 4, ts)
    # tuning again into the same file replaces the earlier grid; no lock is left behind
    assert run("tune-grid", "--config", cfg, "--method", "DDIM", "--nfe", 3, "--num-samples", 8,
               "--eval-samples", 4, "--iterations", 1, "--out", out) == 0
    assert json.loads(out.read_text())["nfe"] == 3 and not [p for p in tmp_path.iterdir() if "lock" in p.name]


@pytest.mark.parametrize("victim", ["config", "stats"])
def test_tune_grid_does_not_overwrite_a_file_that_is_not_a_grid(tiny, tmp_path, capsys, victim):
    cfg, _ = tiny
    path = cfg if victim == "config" else tmp_path / "stats.npz"
    if victim == "stats":
        path.write_bytes(b"PK\x03\x04 not json")
    before = path.read_bytes()
    assert run("tune-grid", "--config", cfg, "--method", "DDIM", "--nfe", 3, "--num-samples", 8,
               "--eval-samples", 4, "--iterations", 1, "--out", path) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not a grid file; refusing to overwrite" in err, err
    assert path.read_bytes() == before


def test_tune_grid_learns_the_first_timestep_and_pins_the_last(tiny, tmp_path):
    cfg, _ = tiny
    out = tmp_path / "grid.json"
    assert run("tune-grid", "--config", cfg, "--method", "DDIM@paper", "--nfe", 3, "--num-samples", 8,
               "--eval-samples", 4, "--iterations", 2, "--learn-first", "--last", 0, "--loss", "mse",
               "--out", out) == 0
    g = json.loads(out.read_text())
    ts = g["timesteps"]
    # learned first timestep: the released grid (666, 333, 0) is a start, so it need not be 999; last pinned at 0
    assert len(ts) == 4 and ts[-2:] == [0.0, -1.0] and all(a > b for a, b in zip(ts, ts[1:])) and ts[0] <= 999
    assert g["loss"]["start_spacing"] == "paper" and g["loss"]["start"] == [666.0, 333.0, 0.0, -1.0]
    assert (g["loss"]["learn_first"], g["loss"]["last"], g["loss"]["objective"]) == (True, 0.0, "mse")
    assert run("sample", "--config", cfg, "--out", tmp_path / "s", "--num-samples", 2, "--timesteps-file", out) == 0
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["identity"]["timesteps"] == ts


def test_tune_grid_on_fid_reports_the_fid_it_searched_and_the_fixed_spacings(tiny, tmp_path, capsys):
    import numpy as np
    import yaml as _yaml

    from models import load_model
    from runners.features import build_extractor
    from runners.fid import fid_from_features, load_stats
    from runners.images import to_uint8
    from runners.tune import TUNE_STREAM, stream_noise
    from samplers import NoiseSchedule, sample

    cfg_path, ckpt = tiny
    out = tmp_path / "grid.json"
    assert run("tune-grid", "--config", cfg_path, "--objective", "fid", "--method", "DPM-Solver++(2M)@paper",
               "--nfe", 3, "--learn-first", "--last", 0, "--num-samples", 16, "--eval-samples", 8,
               "--evaluations", 3, "--out", out) == 0
    g = json.loads(out.read_text())
    ts, search = g["timesteps"], g["search"]
    assert g["objective"] == "fid" and (g["method"], g["nfe"]) == ("DPM-Solver++(2M)", 3) and ts[-2:] == [0.0, -1.0]
    assert search["start"] == [666.0, 333.0, 0.0, -1.0] and search["evaluations"] == 1 + 3
    assert search["objective"] <= search["objective_start"]
    fixed = g["comparison"]["fixed"]
    assert "DPM-Solver++(2M)@paper" in fixed and all(np.isfinite(v["fid"]) for v in fixed.values())
    assert g["comparison"]["best_fixed"] == min(fixed, key=lambda n: fixed[n]["fid"])
    assert "FID: searched" in capsys.readouterr().out
    # the searched objective is the FID of the grid's samples from the tuning stream, recomputed here
    cfg = _yaml.safe_load(cfg_path.read_text())
    net = load_model(cfg, str(ckpt))
    x = stream_noise(16, (1, 8, 8), 0, TUNE_STREAM)
    with torch.no_grad():
        x0 = sample(lambda a, t: net(a, t), x, NoiseSchedule.from_config(cfg["Schedule"]), "DPM-Solver++(2M)",
                    timesteps=ts)
    extractor = build_extractor("digits", cfg["FID"]["extractor_weights"], "cpu")
    fid = fid_from_features(extractor(to_uint8(x0)).numpy(), load_stats(cfg["FID"]["stats"]), extractor.name)
    assert fid == pytest.approx(search["objective"], rel=1e-6)


@pytest.mark.parametrize("extra, message", [
    (("--method", "DDIM", "--nfe", 3, "--objective", "lpips"), "--objective must be one of teacher, fid"),
    (("--method", "DDIM", "--nfe", 3, "--evaluations", 3), "--evaluations is for --objective fid"),
    (("--method", "DDIM", "--nfe", 3, "--objective", "fid", "--iterations", 3), "--iterations is for --objective "
                                                                                  "teacher"),
    (("--method", "DDIM", "--nfe", 3, "--loss", "l1"), "--loss must be one of log, mse"),
    (("--method", "DDIM", "--nfe", 3, "--last", 999), "--last must be a timestep in [0, 999)"),
    (("--method", "DDIM", "--nfe", 2, "--last", 0), "no timestep is left to learn"),
    (("--method", "F-PNDM", "--nfe", 5), "too small to tune F-PNDM"),
    (("--method", "DDPM", "--nfe", 5), "stochastic"),
    (("--method", "PF", "--nfe", 5), "adaptive"),
    (("--method", "nope", "--nfe", 5), "unknown method"),
    (("--method", "DDIM", "--nfe", 0), "--nfe must be at least 1"),
    (("--method", "DDIM", "--nfe", 3, "--objective", "fid", "--eval-samples", 1), "--eval-samples of at least 2"),
])
def test_tune_grid_bad_input_is_one_line(tiny, tmp_path, capsys, extra, message):
    cfg, _ = tiny
    assert run("tune-grid", "--config", cfg, "--out", tmp_path / "g.json", *extra) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "g.json").exists()


def test_tune_grid_refuses_a_network_without_time_gradients(tiny, tmp_path, capsys, monkeypatch):
    import runners.tune as tune

    cfg, _ = tiny
    real = tune.load_network
    monkeypatch.setattr(tune, "load_network", lambda job, device: (lambda f: lambda x, t: f(x, t.detach()))(
        real(job, device)))
    assert run("tune-grid", "--config", cfg, "--method", "DDIM", "--nfe", 3, "--num-samples", 8,
               "--eval-samples", 2, "--out", tmp_path / "g.json") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "differentiable" in err, err


@pytest.mark.parametrize("key", ["timesteps_file", "solver_file"])
def test_ablate_reads_the_config_key_too(tiny, tmp_path, capsys, key):
    # ablate used to ignore Sample.timesteps_file / solver_file (sample honours them): a file for another
    # checkpoint ran unchecked
    from .test_learned_solvers import solver_file

    cfg, _ = tiny
    (tmp_path / "other").mkdir()
    _, other_ckpt = write_tiny(tmp_path / "other", seed=1)
    path = (grid_file if key == "timesteps_file" else solver_file)(tmp_path / "f.json", other_ckpt)
    assert run("ablate", "--config", cfg, "--out", tmp_path / "abl", "--methods", "DDIM", "--steps", "5",
               "--num-samples", 4, "--set", f"Sample.{key}={path}") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tuned for checkpoint" in err and "--force" in err


def test_the_manifests_config_reproduces_the_run(tiny, tmp_path):
    """Fed back to `sample`, manifest.json's effective config must make the same images: it lacked the precision,
    the grid file and the --stats of the run (a bf16 run on a tuned grid came back fp32 on the method's own grid)."""
    cfg, ckpt = tiny
    grid = grid_file(tmp_path / "g.json", ckpt, method="UniPC-3(bh2)")
    first = tmp_path / "first"
    assert run("sample", "--config", cfg, "--out", first, "--num-samples", 3, "--seed", 5, "--batch-size", 2,
               "--precision", "bf16", "--timesteps-file", grid) == 0
    recorded = json.loads((first / "manifest.json").read_text())["config"]
    assert recorded["Sample"]["timesteps_file"] == str(grid.resolve()) and recorded["Sample"]["precision"] == "bf16"
    again_cfg = tmp_path / "again.yml"
    again_cfg.write_text(yaml.safe_dump(recorded))
    again = tmp_path / "again"
    assert run("sample", "--config", again_cfg, "--out", again) == 0
    a, b = (json.loads((d / "manifest.json").read_text()) for d in (first, again))
    assert a["identity"] == b["identity"] and (a["num_samples"], a["precision"]) == (b["num_samples"], "bf16")
    for i in range(3):
        assert sample_path(first, i, 3).read_bytes() == sample_path(again, i, 3).read_bytes()


@pytest.mark.parametrize("centered", [True, False])
def test_the_fid_search_scores_the_pixels_sample_writes(monkeypatch, centered):
    """tune-grid --objective fid converted samples as if in [-1, 1]: a centered: false model's FIDs (the search's
    objective and grid.json's comparison) were of other images than `sample --fid` scores."""
    from types import SimpleNamespace

    import runners.fid
    from models import GaussianMixture
    from runners.images import to_uint8
    from runners.tune import fid_of_grid
    from samplers import NoiseSchedule, sample

    schedule = NoiseSchedule("linear")
    model = GaussianMixture.random(2, (1, 4, 4), seed=0, schedule=schedule)
    x_T = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    seen = []
    monkeypatch.setattr(runners.fid, "fid_from_features", lambda features, reference, name: seen.append(features)
                        or 1.0)
    job = SimpleNamespace(config={"Model": {"centered": centered}}, schedule=schedule, batch_size=2,
                          fid=SimpleNamespace(reference=None))

    class Recorder:
        name = "fake"

        def __call__(self, images):
            return images.float()

    assert fid_of_grid(model, job, Recorder(), x_T, method="DDIM", steps=3) == 1.0
    expected = to_uint8(sample(model, x_T, schedule, "DDIM", 3), centered).float()
    assert torch.equal(torch.as_tensor(seen[0]), expected)
