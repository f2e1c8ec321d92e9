"""scripts/bench_learned_solver.py: one table row per budget, scored against the fixed spacings in one process
(the scheme itself is tested in tests/samplers/test_learned.py)."""
import importlib.util
import re
import sys

from tests.conftest import REPO


def test_cli_prints_a_row(capsys):
    sys.path.insert(0, str(REPO / "scripts"))  # the script imports bench_tuning as its own sibling
    try:
        spec = importlib.util.spec_from_file_location("bench_learned_solver", REPO / "scripts" / "bench_learned_solver.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.main(["--nfe", "3", "--iterations", "2", "--n-tune", "24", "--holdout", "8", "--batch-size", "8",
                     "--n-test", "8", "--eval-every", "1", "--any-methods", "DDIM", "--threads", "1", "--affine"])
    finally:
        sys.path.remove(str(REPO / "scripts"))
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| 3 |")]
    assert len(rows) == 1
    numbers = [float(v) for v in re.findall(r"\d\.\d\de[+-]\d\d", rows[0])]
    assert len(numbers) == 3 and all(0 < v < 10 for v in numbers)
    assert "grid [999.0, " in out and "network-time shifts" in out
