"""Fixtures and the test session's environment; what tests import lives in ``tests/helpers``."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.helpers import ROOT, SHARED_DATA

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Caches of a test run (reference log-probs, SFT weights) stay out of the checkout.
os.environ.setdefault("GPO_LAB_CACHE", tempfile.mkdtemp(prefix="gpo_lab-test-cache-"))


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run several times faster on one thread than on threads that fight for 2 cores."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> dict:
    """A running single-node SLURM cluster: the one CI started (SLURM_CONF set), or one started here.

    Starting one needs root (Debian packages and daemons); elsewhere the SLURM tests skip with
    that reason, except in CI, where a missing cluster is a failure.
    """
    script = ROOT / ".ci" / "slurm-cluster"
    if os.environ.get("SLURM_CONF") and subprocess.run(["sinfo"], capture_output=True).returncode == 0:
        yield {"SLURM_CONF": os.environ["SLURM_CONF"]}
        return
    if os.geteuid() != 0 and not os.environ.get("CI"):
        pytest.skip("no SLURM cluster is running (SLURM_CONF unset) and starting one needs root")
    state = tmp_path_factory.mktemp("slurm")
    subprocess.run([str(script), "install"], check=True)
    started = subprocess.run([str(script), "start", str(state)], check=True, capture_output=True, text=True)
    conf = started.stdout.strip().split("SLURM_CONF=", 1)[1].strip("'\"")
    os.environ["SLURM_CONF"] = conf
    try:
        yield {"SLURM_CONF": conf}
    finally:
        subprocess.run([str(script), "stop", str(state)], capture_output=True)
        os.environ.pop("SLURM_CONF", None)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared preference data folder ({SHARED_DATA.name}/ beside the checkout) is absent")
    return SHARED_DATA
