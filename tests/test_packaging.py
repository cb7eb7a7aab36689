"""A wheel (``pip install .``, not editable) carries the configs: ``python -m gpo_lab`` runs from any directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest

from tests.helpers import ROOT


@pytest.mark.slow
def test_a_wheel_installed_elsewhere_runs_the_smoke_experiment_from_another_directory(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(ROOT), "-w", tmp_path],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("gpo_lab-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "gpo_lab/conf/config.yaml" in names and "gpo_lab/conf/loss/logistic.yaml" in names
    assert "gpo_lab/conf/experiment/smoke.yaml" in names and "gpo_lab/conf/hydra/gpo_lab.yaml" in names
    installed = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", installed, wheel],
        check=True,
        capture_output=True,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(installed), "GPO_LAB_CACHE": str(tmp_path / "cache")}
    where = subprocess.run(
        [sys.executable, "-c", "import gpo_lab.config_dir as c; print(c.CONF_DIR)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.strip() == str(installed / "gpo_lab" / "conf")  # the wheel's, not the checkout's
    result = subprocess.run(
        [sys.executable, "-m", "gpo_lab", "+experiment=smoke", "trainer.max_steps=2", "trainer.val_check_interval=2"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (summary,) = elsewhere.glob("outputs/smoke/*/summary.json")
    assert json.loads(summary.read_text())["status"] == "completed"
