"""The shell entry points print their usage, and refuse bad arguments with one line."""
import subprocess

import pytest

from .conftest import REPO

SCRIPTS = ["train_cifar10.sh", "train_celeba.sh", "train_lsun.sh", "train_digits.sh", "fid_stats.sh",
           "reproduce_paper.sh"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_usage(script):
    proc = subprocess.run(["bash", str(REPO / "scripts" / script), "-h"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout.startswith(f"Usage: scripts/{script}")


@pytest.mark.parametrize("script, args", [("train_lsun.sh", ["tower"]), ("fid_stats.sh", ["mnist"]),
                                          ("reproduce_paper.sh", ["imagenet"])])
def test_bad_dataset_argument(script, args):
    proc = subprocess.run(["bash", str(REPO / "scripts" / script), *args], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and len(proc.stderr.splitlines()) == 1


@pytest.mark.parametrize("script, args, message", [
    ("bench_samplers.py", ["--steps", "0"], "argument --steps: expected integers >= 1, got '0'"),
    ("bench_samplers.py", ["--steps", "5,x"], "argument --steps: expected comma-separated integers"),
    ("bench_samplers.py", ["--batch", "0"], "argument --batch: expected an integer >= 1, got 0"),
    ("bench_unet.py", ["--batch", "0"], "argument --batch: expected an integer >= 1, got 0"),  # was a table of 0s
    ("bench_frontier.py", ["--mixtures", "5-3"], "argument --mixtures: expected integers >= 0, got '5-3'"),
    ("bench_frontier.py", ["--batch", "0"], "argument --batch: expected an integer >= 1, got 0"),  # tracebacks
    ("bench_tuning.py", ["--nfe", "0,5"], "argument --nfe: expected integers >= 1"),
    ("bench_tuning.py", ["--mixtures", "-1"], "argument --mixtures: expected comma-separated integers"),
])
def test_benchmarks_refuse_bad_arguments_with_argparse_errors(script, args, message):
    """A traceback from deep inside a benchmark used to be the answer to a bad number."""
    import sys

    proc = subprocess.run([sys.executable, str(REPO / "scripts" / script), *args], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and message in proc.stderr.splitlines()[-1], proc.stderr


def test_a_fid_stats_script_without_a_venv_uses_the_python_it_finds(tmp_path):
    """scripts/fid_stats.sh read the config's FID.stats with .venv/bin/python only, and hid why it failed."""
    import shutil
    import sys

    clone = tmp_path / "clone"
    shutil.copytree(REPO / "scripts", clone / "scripts")
    shutil.copytree(REPO / "configs", clone / "configs")
    (clone / "main.py").write_text("import sys; print('main.py', *sys.argv[1:])\n")  # stands in for the CLI
    (clone / "runners").symlink_to(REPO / "runners")  # what the FID.stats lookup imports
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run(["bash", str(clone / "scripts" / "fid_stats.sh"), "digits"], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[:4] == ["main.py", "stats", "--config", "configs/digits.yml"]
    assert proc.stdout.split()[-1].endswith("models/weights/digits_fid_stats.npz")


def test_bench_gpu_prints_its_usage_and_fails_loudly(tmp_path):
    """It took --help for its output folder and ran; with an interpreter lacking torch every part failed and the
    script still said 'done' with exit 0 (device time spent for an empty log)."""
    script = str(REPO / "scripts" / "bench_gpu.sh")
    proc = subprocess.run(["bash", script, "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout.startswith("One prepared GPU session") and "PYTHON" in proc.stdout
    no_torch = tmp_path / "python"
    no_torch.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named torch' >&2\nexit 1\n")
    no_torch.chmod(0o755)
    proc = subprocess.run(["bash", script, str(tmp_path / "out")], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": str(no_torch), "PARTS": "unet"})
    assert proc.returncode == 1 and "cannot import torch" in proc.stdout and "=== done" not in proc.stdout


@pytest.mark.parametrize("nproc", ["abc", "2x", "0", "-1", "02"])
def test_a_bad_nproc_is_one_error_line(tmp_path, nproc):
    # was a bash "integer expression expected" and a silent 1-process run (exit 0)
    import os

    proc = subprocess.run(["bash", str(REPO / "scripts" / "train_digits.sh"), str(tmp_path / "w"), "--max-steps", "1"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "NPROC": nproc})
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"error: NPROC must be a positive whole number of processes, got '{nproc}'"), proc.stderr
    assert not (tmp_path / "w").exists()
