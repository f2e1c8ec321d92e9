"""Torch's thread count: sampling jobs default to the cores not busy with other work; the jobs that learn numbers
(tune-grid, tune-solver) default to all of the process's cores whatever the load, since what they learn depends on
the thread count."""
import json

import pytest
import torch

import runners.setup as setup
from main import main


@pytest.fixture(autouse=True)
def restore_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def busy(monkeypatch, cores: float):
    monkeypatch.setattr(setup, "busy_cores", lambda interval=0.1: cores)


def test_sampling_follows_the_load_and_learning_does_not(monkeypatch):
    cores = setup.process_cores()
    busy(monkeypatch, cores)  # every core busy with other work
    assert setup.apply_threads(None) == 1 == torch.get_num_threads()
    assert setup.apply_threads(None, follow_load=False) == cores == torch.get_num_threads()
    assert setup.apply_threads(3, follow_load=False) == 3  # --threads wins
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    assert setup.apply_threads(None, follow_load=False) == 1  # so does the user's OMP_NUM_THREADS


def test_torchrun_processes_share_the_cores(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "64")
    assert setup.process_cores() == 1


def test_a_tuned_grid_does_not_depend_on_the_machines_load(tiny, tmp_path, monkeypatch):
    """The same tune-grid command on an idle and on a busy machine writes the same grid (on this project's CPUs
    the gradients differ between 1 and 2 threads, so a load-following default made them differ)."""
    cfg, _ = tiny
    grids = []
    for load in (0.0, setup.process_cores() - 1.0):
        busy(monkeypatch, load)
        out = tmp_path / f"grid{load}.json"
        assert main(["tune-grid", "--config", str(cfg), "--method", "DPM-Solver++(2M)", "--nfe", "4",
                     "--num-samples", "12", "--eval-samples", "4", "--iterations", "6", "--out", str(out)]) == 0
        g = json.loads(out.read_text())
        assert g["threads"] == setup.process_cores()
        grids.append(g["timesteps"])
    assert grids[0] == grids[1]
