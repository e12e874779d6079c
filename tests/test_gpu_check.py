"""benchmarks/gpu_check.sh on a machine without a GPU: everything up to the first GPU step runs."""
import subprocess

from conftest import ROOT


def test_gpu_check_runs_up_to_its_first_gpu_step(tmp_path):
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--work", str(tmp_path / "w")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no CUDA device: stopping before the first GPU step" in r.stdout
    assert (tmp_path / "w" / "store" / "meta.json").is_file()
