"""Training: the loss goes down, --resume is bit-exact, checkpoints are atomic and load as EMA weights, torchrun
with two gloo processes works, the caller's RNG is untouched, the workdir has one writer, Ctrl-C reports what is
on disk, and user errors surface as one line.

A tiny DDPM UNet on scikit-learn's 8×8 digits keeps every run to a few seconds on two CPU cores. The torch
thread count is pinned to one: on a shared two-core machine, OpenMP's spinning threads otherwise make every
step a hundred times slower.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import main as cli_main
from models import load_model
from models.ema import EMA
from runners.config import load_config
from runners.errors import UserError
from runners.files import OutputLock, save_torch_atomic
from runners.jobs import TrainJob
from runners.training import (CHECKPOINT_FORMAT, LAST, ConfigRecord, DivergedError, NoCheckpointError, ResumeError,
                              diffusion_loss, epoch_permutation, load_checkpoint, lr_at, rank_batches, resolve_settings,
                              run_training)

REPO = Path(__file__).resolve().parents[2]
BATCH = 64  # 1797 digits → 28 steps per epoch, so a 40-step run crosses an epoch boundary

TINY = {
    "Schedule": {"type": "linear", "beta_start": 0.0001, "beta_end": 0.02, "diffusion_step": 1000},
    "Dataset": {"dataset": "DIGITS", "image_size": 8, "channels": 1, "random_flip": False, "num_workers": 0},
    # ch=32, not 16: the DDPM UNet's GroupNorm has 32 groups
    "Model": {"struc": "DDIM", "type": "simple", "image_size": 8, "in_channels": 1, "out_ch": 1, "ch": 32,
              "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [4], "dropout": 0.1,
              "resamp_with_conv": True, "ckpt": "unused.pt"},  # every real config names its weights
    "Train": {"loss_type": "linear", "batch_size": BATCH, "ema_rate": 0.9, "ema": True, "snapshot_freq": 20,
              "sample_freq": 20, "log_freq": 1, "seed": 0},
    "Optim": {"optimizer": "adam", "lr": 0.001, "beta1": 0.9, "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False,
              "grad_clip": 1.0, "warmup": 5},
}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_config(folder: Path, **sections) -> Path:
    cfg = {k: dict(v) for k, v in TINY.items()}
    for section, values in sections.items():
        cfg[section].update(values)
    path = folder / "tiny.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def job(config: Path, workdir: Path, steps: int, resume: bool = False, overrides=()) -> TrainJob:
    """The job ``main.py train`` builds (see ``runners.cli.train_job``)."""
    cfg = load_config(config, list(overrides))
    return TrainJob(config=cfg, settings=resolve_settings(cfg, steps), workdir=Path(workdir), resume=resume,
                    device="cpu")


def train(config: Path, workdir: Path, steps: int, resume: bool = False, overrides=()) -> dict:
    return run_training(job(config, workdir, steps, resume, overrides))


def last(workdir: Path) -> dict:
    return load_checkpoint(workdir / "checkpoints" / "last.pt")


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """40 uninterrupted steps (snapshots and sample grids at 20 and 40)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("straight")
    config = write_config(folder)
    summary = train(config, folder / "run", 40)
    torch.set_num_threads(before)
    return config, folder / "run", summary


def assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        assert torch.equal(a[k], b[k]), f"{what}: {k} differs"


# ---------------------------------------------------------------------------------------------------------------
# pieces


def test_loss_reduction_and_types():
    model = lambda x, t: torch.zeros_like(x)  # noqa: E731 — predicts ε = 0, so the error is −ε
    x0 = torch.zeros(3, 1, 2, 2)
    noise = torch.arange(12.0).view(3, 1, 2, 2) - 6
    ac = torch.full((10,), 0.5)
    t = torch.tensor([0, 5, 9])
    l1 = diffusion_loss(model, x0, t, noise, ac, "linear")
    l2 = diffusion_loss(model, x0, t, noise, ac, "square")
    assert l1.item() == pytest.approx(noise.abs().sum().item() / 3)  # summed over pixels, mean over the batch
    assert l2.item() == pytest.approx(noise.square().sum().item() / 3)


def test_lr_warmup():
    assert lr_at(0, 1.0, 0) == 1.0
    assert [lr_at(s, 1.0, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_data_order_is_a_function_of_seed_and_epoch_and_shards_are_disjoint():
    assert torch.equal(epoch_permutation(0, 3, 100), epoch_permutation(0, 3, 100))
    assert not torch.equal(epoch_permutation(0, 3, 100), epoch_permutation(0, 4, 100))
    perm = epoch_permutation(1, 0, 103)
    shards = [rank_batches(perm, 0, 8, 3, r) for r in range(3)]
    assert all(len(s) == 103 // 24 for s in shards)
    seen = [i for s in shards for b in s for i in b]
    assert len(seen) == len(set(seen)) == 4 * 24
    # resuming mid-epoch continues with the same batches
    assert rank_batches(perm, 48, 8, 3, 1) == shards[1][2:]


def test_ema_update_rule():
    net = torch.nn.Linear(2, 1)
    ema = EMA(net, 0.75)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(4.0)
    ema.update(net)
    for k, v in ema.state_dict().items():
        assert torch.allclose(v, start[k] + 1.0)  # 0.75·w + 0.25·(w + 4)
    other = EMA(net, 0.75)
    other.load_state_dict(ema.state_dict())
    assert_same_tensors(other.state_dict(), ema.state_dict(), "EMA round trip")


# ---------------------------------------------------------------------------------------------------------------
# training runs


def test_training_runs_and_loss_decreases(straight):
    _, workdir, summary = straight
    losses = [v for _, v in summary["losses"]]
    assert len(losses) == 40 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-10:]) < 0.8 * sum(losses[:10]), losses
    state = last(workdir)
    assert state["format"] == CHECKPOINT_FORMAT
    assert (state["step"], state["epoch"], state["position"]) == (40, 1, 12 * BATCH)
    assert not all(torch.equal(state["model"][k], state["ema"][k]) for k in state["model"])
    assert (workdir / "config.yml").is_file() and yaml.safe_load((workdir / "config.yml").read_text())["Train"][
        "max_steps"] == 40
    assert sorted(p.name for p in (workdir / "samples").iterdir()) == ["step_0000020.png", "step_0000040.png"]
    assert any((workdir / "tensorboard").iterdir())


def test_resume_is_bit_exact(straight, tmp_path):
    config, straight_dir, _ = straight
    workdir = tmp_path / "run"
    train(config, workdir, 20)
    assert last(workdir)["step"] == 20
    summary = train(config, workdir, 40, resume=True)
    assert summary["step"] == 40
    a, b = last(straight_dir), last(workdir)
    assert (a["step"], a["epoch"], a["position"]) == (b["step"], b["epoch"], b["position"])
    assert_same_tensors(a["model"], b["model"], "model")
    assert_same_tensors(a["ema"], b["ema"], "EMA")
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert_same_tensors(pa, pb, "Adam state")


def test_resume_with_changed_settings_records_them_from_their_step(tmp_path, capsys):
    """--resume --set Optim.lr=… used to rewrite config.yml and the checkpoint's config with the new lr, as if the
    whole run had used it. The record keeps the settings the run started with and each change with its step."""
    config = write_config(tmp_path, Train={"snapshot_freq": 2, "sample_freq": 0, "log_freq": 2},
                          Optim={"warmup": 0})
    workdir = tmp_path / "run"
    train(config, workdir, 2)
    first = (workdir / "config.yml").read_text()
    train(config, workdir, 4, resume=True, overrides=["Optim.lr=0.01"])
    assert "resume: Optim.lr changed 0.001 → 0.01 from step 2" in capsys.readouterr().err
    change = {"step": 2, "changes": {"Optim.lr": [0.001, 0.01]}}
    state = last(workdir)
    assert state["config"]["Optim"]["lr"] == 0.001 and state["resumes"] == [change]
    assert state["optimizer"]["param_groups"][0]["lr"] == 0.01  # and the run did train with the new lr
    assert state["config"]["Train"]["max_steps"] == 4  # the run length is the latest, not history
    text = (workdir / "config.yml").read_text()
    assert "#   from step 2: Optim.lr 0.001 → 0.01" in text
    recorded = load_config(workdir / "config.yml")  # still a config that loads: the settings the run has now
    current = ConfigRecord.of_checkpoint(state).current()
    current["Model"]["ckpt"] = str((workdir / current["Model"]["ckpt"]).resolve())  # relative to W/config.yml
    assert recorded["Optim"]["lr"] == 0.01 and recorded == current
    # resuming with the same change again, or with the recorded file, is no new change
    train(config, workdir, 6, resume=True, overrides=["Optim.lr=0.01"])
    assert "resume: " not in capsys.readouterr().err and last(workdir)["resumes"] == [change]
    train(workdir / "config.yml", workdir, 8, resume=True)
    assert "resume: " not in capsys.readouterr().err and last(workdir)["resumes"] == [change]
    # going back is a change of its own
    train(config, workdir, 10, resume=True)
    assert "resume: Optim.lr changed 0.01 → 0.001 from step 8" in capsys.readouterr().err
    state = last(workdir)
    assert state["resumes"] == [change, {"step": 8, "changes": {"Optim.lr": [0.01, 0.001]}}]
    assert state["config"]["Optim"]["lr"] == 0.001
    assert (workdir / "config.yml").read_text().count("#   from step") == 2
    # a run resumed with its own settings records no resume: config.yml is the fresh run's but for the run length
    other = tmp_path / "same"
    train(config, other, 2)
    train(config, other, 4, resume=True)
    assert last(other)["resumes"] == [] and (other / "config.yml").read_text() == first.replace(
        "max_steps: 2", "max_steps: 4")


def test_resume_applies_changed_optimiser_settings(tmp_path):
    """Adam's load_state_dict restores the saved beta1/eps/weight_decay: a change was reported and recorded but
    the run kept training with the old values. amsgrad cannot change (the saved state has no running maximum)."""
    config = write_config(tmp_path, Train={"snapshot_freq": 2, "sample_freq": 0, "log_freq": 2},
                          Optim={"warmup": 0})
    workdir = tmp_path / "run"
    train(config, workdir, 2)
    train(config, workdir, 3, resume=True, overrides=["Optim.beta1=0.5", "Optim.eps=0.1", "Optim.weight_decay=0.25"])
    group = last(workdir)["optimizer"]["param_groups"][0]
    assert (group["betas"][0], group["eps"], group["weight_decay"]) == (0.5, 0.1, 0.25)
    with pytest.raises(ResumeError, match="Optim.amsgrad cannot change on resume") as err:
        train(config, workdir, 4, resume=True, overrides=["Optim.amsgrad=true"])
    assert "\n" not in str(err.value)


def test_switching_ema_off_on_resume_removes_the_stale_ema_file(tmp_path):
    config = write_config(tmp_path, Train={"snapshot_freq": 2, "sample_freq": 0, "log_freq": 2})
    workdir = tmp_path / "run"
    train(config, workdir, 2)
    assert (workdir / "checkpoints" / "ema.pt").exists()
    train(config, workdir, 4, resume=True, overrides=["Train.ema=false"])
    assert "ema" not in last(workdir) and not (workdir / "checkpoints" / "ema.pt").exists()


def test_checkpoints_load_as_ema_weights(straight):
    config, workdir, _ = straight
    cfg = load_config(config)
    del cfg["Model"]["ckpt"]  # the UNet's constructor refuses the runner's own key
    state = torch.load(workdir / "checkpoints" / "last.pt", weights_only=True)  # no pickled objects
    for name in ("last.pt", "ema.pt"):
        model = load_model(cfg, workdir / "checkpoints" / name)
        assert_same_tensors(model.state_dict(), state["ema"], name)
    plain = torch.load(workdir / "checkpoints" / "ema.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in plain.values())


def test_killed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    config = write_config(tmp_path, Train={"snapshot_freq": 3, "sample_freq": 0, "log_freq": 5})
    workdir = tmp_path / "run"
    real_save = torch.save
    calls = {"n": 0}

    def dying_save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= 2:  # step 3: last.pt and ema.pt
            return real_save(obj, f, *args, **kwargs)
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("killed while saving")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="killed while saving"):
        train(config, workdir, 8)
    monkeypatch.undo()
    state = last(workdir)
    assert state["step"] == 3
    assert [p.name for p in (workdir / "checkpoints").iterdir() if p.name.endswith(".tmp")] == []
    # and the direct helper: a failed save leaves the old file and no temporary behind
    target = tmp_path / "x.pt"
    save_torch_atomic({"a": torch.ones(1)}, target)
    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError):
        save_torch_atomic({"a": torch.zeros(1)}, target)
    monkeypatch.undo()
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.ones(1))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_workdir_and_resume_mismatches_are_refused(straight, tmp_path):
    config, workdir, _ = straight
    with pytest.raises(NoCheckpointError, match="--resume") as err:
        train(config, tmp_path / "empty", 5, resume=True)
    assert isinstance(err.value, UserError) and not (tmp_path / "empty").exists()
    with pytest.raises(ResumeError, match="pass --resume") as err:
        train(config, workdir, 50)
    assert isinstance(err.value, UserError)
    with pytest.raises(ResumeError, match="Model.ch"):
        train(config, workdir, 50, resume=True, overrides=["Model.ch=64"])
    assert last(workdir)["step"] == 40  # nothing was touched
    assert not (workdir / ".lock").exists()


def test_bad_training_config_is_refused(tmp_path):
    config = write_config(tmp_path, Train={"loss_type": "huber"})
    with pytest.raises(ValueError, match="Train.loss_type"):
        train(config, tmp_path / "run", 5)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("overrides, key", [
    (["Train.batch_size=0"], "Train.batch_size"),  # was silently replaced by Dataset.batch_size
    (["Train.batch_size=-2"], "Train.batch_size"),
])
def test_zero_batch_size_is_refused_not_replaced(tmp_path, overrides, key):
    config = write_config(tmp_path, Dataset={"batch_size": 128})
    with pytest.raises(UserError, match=rf"^{key} must be ≥ 1"):
        train(config, tmp_path / "run", 2, overrides=overrides)
    assert not (tmp_path / "run").exists()
    # the fallback itself still works when Train.batch_size is absent
    cfg = load_config(config)
    del cfg["Train"]["batch_size"]
    assert resolve_settings(cfg, 2).batch_size == 128


@pytest.mark.parametrize("override", ["Optim.beta1=1.5", "Optim.beta1=-0.1", "Optim.beta1=1", "Optim.eps=-1",
                                      "Optim.eps=nan", "Optim.lr=0", "Optim.lr=inf", "Optim.weight_decay=-0.5",
                                      "Optim.grad_clip=-1", "Optim.grad_clip=nan", "Optim.warmup=-1"])
def test_bad_optimiser_settings_are_one_line_before_anything_is_written(tmp_path, override, capsys):
    """Values torch's Adam rejects used to surface as its traceback (exit 1); NaN slipped past ``< 0`` checks."""
    config = write_config(tmp_path)
    workdir = tmp_path / "run"
    argv = ["train", "--config", str(config), "--workdir", str(workdir), "--max-steps", "2", "--device", "cpu",
            "--threads", "1", "--set", override]
    assert cli_main.main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    key = override.split("=")[0]
    assert len(lines) == 1 and lines[0].startswith(f"error: {key} must be "), lines
    assert not workdir.exists()


def files_in(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")}


def nan_loss_after(n: int):
    """A ``loop.diffusion_loss`` that turns NaN from its (n+1)-th call on: a run diverging at a chosen step."""
    calls = {"n": 0}

    def loss(*args, **kwargs):
        calls["n"] += 1
        value = diffusion_loss(*args, **kwargs)
        return value * float("nan") if calls["n"] > n else value

    return loss


def test_failure_before_the_first_checkpoint_leaves_the_workdir_as_found(tmp_path, monkeypatch):
    """A run used to leave its TensorBoard events and sample grids behind when it failed before its first
    checkpoint; a resumed one also its rewritten config.yml."""
    from runners.training import loop

    config = write_config(tmp_path, Train={"snapshot_freq": 10, "sample_freq": 1, "log_freq": 1})
    # Optim.eps=0: Adam divides 0 by 0 for a parameter without gradient, and the loss is NaN by step 2
    with pytest.raises(DivergedError, match="no checkpoint was written"):
        train(config, tmp_path / "new", 5, overrides=["Optim.eps=0"])
    assert not (tmp_path / "new").exists()
    # a folder that held something else keeps exactly that, and nothing of the run (grids of steps 1 and 2)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    monkeypatch.setattr(loop, "diffusion_loss", nan_loss_after(2))
    with pytest.raises(DivergedError, match="by step 3"):
        train(config, mine, 5)
    assert files_in(mine) == {"notes.txt": b"mine"}
    # a resumed run that fails before its own first checkpoint leaves everything the run had, byte for byte
    monkeypatch.undo()
    workdir = tmp_path / "run"
    train(config, workdir, 2, overrides=["Train.snapshot_freq=2"])
    had = files_in(workdir)
    assert any(name.startswith("tensorboard/") for name in had) and "samples/step_0000002.png" in had
    monkeypatch.setattr(loop, "diffusion_loss", nan_loss_after(1))  # a grid at step 3, NaN at step 4
    with pytest.raises(DivergedError, match=r"by step 4; the last checkpoint \(step 2\)"):
        train(config, workdir, 10, resume=True, overrides=["Optim.lr=0.01"])
    assert files_in(workdir) == had
    # after a checkpoint of its own, a failing run keeps what it wrote
    monkeypatch.setattr(loop, "diffusion_loss", nan_loss_after(3))
    with pytest.raises(DivergedError, match=r"the last checkpoint \(step 4\)"):
        train(config, workdir, 10, resume=True, overrides=["Train.snapshot_freq=2"])
    assert last(workdir)["step"] == 4 and (workdir / "samples" / "step_0000005.png").is_file()


# ---------------------------------------------------------------------------------------------------------------
# subprocesses: torchrun and the command line


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    return env


_LAUNCH_FAILURES = ("DistNetworkError", "RendezvousError", "Address already in use", "EADDRINUSE",
                    "Permission denied", "Cannot assign requested address", "Connection refused")


def test_torchrun_two_gloo_processes(tmp_path):
    config = write_config(tmp_path, Train={"batch_size": 16, "sample_freq": 2, "snapshot_freq": 2, "log_freq": 1},
                          Dataset={"random_flip": True})
    workdir = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "main.py"), "train", "--config", str(config), "--workdir", str(workdir), "--max-steps", "4",
           "--device", "cpu"]
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"torchrun did not finish in {err.timeout} s:\n{err.stderr}")
    if proc.returncode != 0 and any(s in proc.stderr for s in _LAUNCH_FAILURES) and not workdir.exists():
        pytest.skip(f"torchrun cannot start two processes here: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    state = last(workdir)
    assert state["step"] == 4 and state["data"]["world_size"] == 2
    assert state["position"] == 4 * 2 * 16  # two disjoint shards of 16 per step
    assert not any(k.startswith("module.") for k in state["model"])
    assert (workdir / "samples" / "step_0000004.png").is_file()


def test_missing_dataset_is_one_error_line(tmp_path):
    config = write_config(tmp_path)
    workdir = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(REPO / "main.py"), "train", "--config", str(config), "--workdir",
                           str(workdir), "--set", "Dataset.dataset=CIFAR10", "--set",
                           f"Dataset.root={tmp_path / 'no-cifar'}", "--max-steps", "1", "--device", "cpu"],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: CIFAR-10 not found"), proc.stderr
    assert not workdir.exists()


def test_batch_size_is_per_process(tmp_path, monkeypatch):
    """Train.batch_size is the batch of ONE process: each of N ranks takes ``batch`` images a step, and a step
    consumes N × batch images of the epoch's permutation."""
    perm = epoch_permutation(0, 0, 1797)
    shards = [rank_batches(perm, 0, BATCH, 2, r) for r in range(2)]
    assert all(len(b) == BATCH for shard in shards for b in shard)
    assert len(shards[0]) == len(shards[1]) == 1797 // (2 * BATCH)
    assert shards[0][0] + shards[1][0] == perm[:2 * BATCH].tolist()
    assert rank_batches(perm, 2 * BATCH, BATCH, 2, 1) == shards[1][1:]  # one step consumed 2 × batch
    # one process: every step's loss sees exactly ``batch`` images, and the position advances by as many
    from runners.training import loop

    seen, real = [], loop.diffusion_loss

    def spy(model, x0, *args, **kwargs):
        seen.append(x0.shape[0])
        return real(model, x0, *args, **kwargs)

    monkeypatch.setattr(loop, "diffusion_loss", spy)
    config = write_config(tmp_path, Train={"batch_size": 10, "sample_freq": 0, "snapshot_freq": 3, "log_freq": 3})
    summary = train(config, tmp_path / "run", 3)
    assert seen == [10, 10, 10] and summary["position"] == 30


def test_callers_global_rng_is_untouched(tmp_path):
    config = write_config(tmp_path, Train={"sample_freq": 2, "snapshot_freq": 2, "log_freq": 2})
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    train(config, tmp_path / "a", 2)
    assert torch.equal(torch.get_rng_state(), before)
    # and the run does not depend on it
    torch.manual_seed(999)
    train(config, tmp_path / "b", 2)
    assert_same_tensors(last(tmp_path / "a")["model"], last(tmp_path / "b")["model"], "model")


def test_second_writer_is_refused(tmp_path):
    config = write_config(tmp_path)
    workdir = tmp_path / "run"
    with OutputLock.for_folder(workdir):  # a live run holds the workdir
        proc = subprocess.run([sys.executable, str(REPO / "main.py"), "train", "--config", str(config),
                               "--workdir", str(workdir), "--max-steps", "1", "--device", "cpu", "--threads", "1"],
                              cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "being written by another run" in lines[0] and f"pid {os.getpid()}" in lines[0], lines[0]
    assert sorted(p.name for p in workdir.iterdir()) == [], "the refused run wrote something"


def test_ctrl_c_reports_what_is_on_disk(tmp_path, monkeypatch, capsys):
    from runners.training import loop

    config = write_config(tmp_path, Train={"snapshot_freq": 3, "sample_freq": 0, "log_freq": 1})
    workdir = tmp_path / "run"
    argv = ["train", "--config", str(config), "--workdir", str(workdir), "--max-steps", "5", "--device", "cpu",
            "--threads", "1"]
    real = loop._optimise

    def interrupt_after(n: int):
        calls = {"n": 0}

        def step(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] > n:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        return step

    # before the first checkpoint (step 3): nothing on disk, so no --resume advice and no last.pt named
    monkeypatch.setattr(loop, "_optimise", interrupt_after(2))
    assert cli_main.main(argv) == 130
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("interrupted at step")]
    assert ours == ["interrupted at step 2, before this run's first checkpoint: nothing was saved"], err
    assert "continue with --resume" not in err and "add --resume" not in err and LAST not in err, err
    assert "no checkpoint was written" in err, err
    assert not (workdir / "checkpoints" / LAST).exists() and not (workdir / "config.yml").exists()

    # the same command starts again; interrupted after its first checkpoint, it points at it
    monkeypatch.setattr(loop, "_optimise", interrupt_after(4))
    assert cli_main.main(argv) == 130
    err = capsys.readouterr().err
    assert f"the last checkpoint (step 3) is {workdir / 'checkpoints' / LAST}: continue with --resume" in err, err
    assert "add --resume" in err, err
    assert last(workdir)["step"] == 3 and (workdir / "config.yml").is_file()

    monkeypatch.setattr(loop, "_optimise", real)
    assert cli_main.main([*argv, "--resume"]) == 0
    assert last(workdir)["step"] == 5


def _events(workdir: Path) -> set:
    """(kind, tag, step) of every scalar and image TensorBoard shows for the run (after its purges)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(workdir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    return ({("scalar", t, e.step) for t in tags["scalars"] for e in acc.Scalars(t)} |
            {("image", t, e.step) for t in tags["images"] for e in acc.Images(t)})


def test_resume_keeps_the_events_of_the_checkpoints_own_step(straight, tmp_path):
    # purge_step was the checkpoint's step: every --resume hid the loss and preview grid logged at that step
    config, straight_dir, _ = straight
    workdir = tmp_path / "run"
    train(config, workdir, 20)
    train(config, workdir, 40, resume=True)
    resumed, full = _events(workdir), _events(straight_dir)
    assert any(step == 20 for _, _, step in full) and {e for e in full if e[0] == "image"}
    assert resumed == full


def test_the_runs_config_names_its_own_weights(straight, tmp_path):
    # W/config.yml kept the config file's Model.ckpt (the released or committed model), so sampling with it
    # sampled another network with exit 0
    _, workdir, _ = straight
    recorded = load_config(workdir / "config.yml")
    assert recorded["Model"]["ckpt"] == str((workdir / "checkpoints" / "ema.pt").resolve())
    config = write_config(tmp_path, Train={"ema": False, "snapshot_freq": 2, "sample_freq": 0})
    train(config, tmp_path / "raw", 2)
    assert load_config(tmp_path / "raw" / "config.yml")["Model"]["ckpt"] == str(
        (tmp_path / "raw" / "checkpoints" / "last.pt").resolve())
    # a copied run names its own weights, not the original's (an absolute path did)
    shutil.copytree(tmp_path / "raw", tmp_path / "copy")
    assert load_config(tmp_path / "copy" / "config.yml")["Model"]["ckpt"] == str(
        (tmp_path / "copy" / "checkpoints" / "last.pt").resolve())
