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
