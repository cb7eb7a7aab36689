"""The first training steps' losses of gpo_lab and of TRL's DPOTrainer agree on real pairs, per loss.

benchmarks/throughput.py trains the same tiny Llama from the same weights on the same batches of
../shared/data's ShareGPT pairs on both sides (gpo_lab's real command line with packed rows and the
reference cache; TRL's DPOTrainer with the matching loss_type); here it is run for a few of the
field's losses that need response lengths or take the two log-ratios apart.
"""

import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT, SHARED_DATA

pytest.importorskip("trl")
pytestmark = pytest.mark.slow

CASES = [  # gpo_lab loss, TRL loss_type, extra arguments
    ("sigmoid_norm", "sigmoid_norm", []),
    ("ipo_avg", "ipo", []),
    ("nca_pair", "nca_pair", []),
    ("robust", "robust", ["--label-smoothing=0.1", "--loss-override=loss.label_smoothing=0.1"]),
]


@pytest.mark.skipif(not (SHARED_DATA / "sharegpt-dpo-en-300.json").is_file(), reason="needs ../shared/data")
@pytest.mark.parametrize("loss,loss_type,extra", CASES, ids=[c[0] for c in CASES])
def test_first_steps_losses_agree_with_trls_trainer(loss, loss_type, extra, tmp_path):
    command = [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--shared-only", "--shared-steps=2"]
    command += ["--warmup=1", "--batch-size=4", f"--loss={loss}", f"--trl-loss-type={loss_type}", *extra]
    result = subprocess.run(command + ["--work-dir", str(tmp_path / "work")], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    (record,) = json.loads(result.stdout.strip().splitlines()[-1]).values()
    ours, theirs = record["gpo_lab_losses"], record["trl_losses"]
    assert len(ours) == len(theirs) == 3
    assert ours == pytest.approx(theirs, rel=1e-4, abs=1e-5)  # float32 on both sides; a few 1e-6 in practice
