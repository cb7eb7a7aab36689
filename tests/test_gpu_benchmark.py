"""benchmarks/gpu.py --tiny: the GPU benchmark's code runs on the CPU and reports every figure."""

from __future__ import annotations

import ast
import json
import math
import subprocess
import sys

import pytest

from tests.helpers import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu.py"


def declared_fields() -> tuple[str, ...]:
    """The FIELDS tuple as the script declares it (read from its source: the script is not a module of the package)."""
    for node in ast.parse(SCRIPT.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "FIELDS":
            return ast.literal_eval(node.value)
    raise AssertionError("benchmarks/gpu.py declares no FIELDS")


@pytest.mark.slow
def test_tiny_run_reports_every_field():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    fields = declared_fields()
    assert {"tokens_per_s", "mfu", "peak_memory_gb", "largest_batch", "batch_at_80gb", "sample_bank_s"} <= set(fields)
    assert tuple(result) == fields
    for name in fields:
        assert f"{name}: " in done.stdout or name == "batch_search"
    assert result["device"] == "cpu" and result["precision"] == "bf16-mixed"
    for name in ("tokens_per_s", "pairs_per_s", "model_tflops_per_s", "mfu", "peak_memory_gb", "sample_bank_s"):
        assert math.isfinite(result[name]) and result[name] > 0, name
    assert result["tokens_per_s"] > result["pairs_per_s"] * 2 * 6  # every pair has a prompt and two responses
    assert [t["batch_size"] for t in result["batch_search"]] == [2, 4, 8]  # doubled up to --tiny's limit
    assert result["largest_batch"] == 8 and result["sample_bank_prompts"] == 8
