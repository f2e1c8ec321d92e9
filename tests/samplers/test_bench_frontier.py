"""scripts/bench_frontier.py: a small run writes its table and plot; its digits FID equals the runner's FID."""
import subprocess
import sys

import numpy as np

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import bench_frontier  # noqa: E402


def test_small_analytic_run_writes_a_ratio_per_budget(tmp_path):
    out = tmp_path / "FRONTIER.md"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_frontier.py"), "--budgets", "5",
                           "--mixtures", "0", "--batch", "2", "--skip-fid", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| 5 |"))
    ours, theirs, ratio = float(row.split("|")[3]), float(row.split("|")[5]), row.split("**")[1]
    assert f"{ours / theirs:.2f}×" == ratio
    assert (tmp_path / "frontier.png").stat().st_size > 10_000


def test_digits_fid_is_the_runners_fid_of_the_same_samples():
    """The benchmark's FID of one configuration = sampling the same noise + runners.fid by hand."""
    from runners.fid import fid_from_features
    from runners.images import to_uint8
    from samplers import sample

    fid = bench_frontier.DigitsFID(200)
    row = dict(side="ours", name="DDIM", steps=10)
    x0 = sample(fid.model, fid.x_T, fid.schedule, "DDIM", steps=10)
    by_hand = fid_from_features(fid.extractor(to_uint8(x0)).numpy(), fid.reference, fid.extractor.name)
    assert np.isclose(fid(row), by_hand, rtol=1e-9)
    fid.reseed(1)  # another noise seed gives other samples, hence another FID
    assert not np.isclose(fid(row), by_hand, rtol=1e-6)
