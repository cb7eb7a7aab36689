"""What tests import (fixtures stay in ``tests/conftest.py``).

    from tests.helpers import ROOT, CONF_DIR, SHARED_DATA        paths of the checkout
    from tests.helpers.cli import run_cli                        ``python -m gpo_lab ARGS`` in a subprocess
    from tests.helpers.runs import compose_config, run_training  the Hydra app in-process
    from tests.helpers.models import tiny_reward_model           small models saved like hub checkpoints
    from tests.helpers.sweeps import synthetic_sweep, write_job  sweep directories written by hand
    tests.helpers.faults.KillAtStep, ...                         faults injected as Hydra callbacks (``_target_``)
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"
SHARED_DATA = ROOT.parent / "shared" / "data"  # real preference data, read-only, beside the checkout
