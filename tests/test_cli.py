"""The command line: Hydra's flags (``-m``, ``--cfg job``, ``--config-dir``, ...) work wherever they stand."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra

import gpo_lab.__main__ as cli
from gpo_lab.__main__ import flags_first
from tests.helpers import ROOT
from tests.helpers.cli import run_cli

# (as typed, as Hydra's argparse needs it: flags and their values first, then the overrides, each in its order)
SHAPES = {
    "multirun last": (
        ["+experiment=smoke", "beta=0.1,1", "-m"],
        ["-m", "+experiment=smoke", "beta=0.1,1"],
    ),
    "multirun between overrides": (
        ["+experiment=smoke", "--multirun", "beta=0.1,1"],
        ["--multirun", "+experiment=smoke", "beta=0.1,1"],
    ),
    "already in order": (
        ["-m", "--cfg", "job", "+experiment=smoke", "beta=0.1"],
        ["-m", "--cfg", "job", "+experiment=smoke", "beta=0.1"],
    ),
    "flag with its value at the end": (
        ["+experiment=smoke", "beta=1", "--cfg", "job"],
        ["--cfg", "job", "+experiment=smoke", "beta=1"],
    ),
    "short flags with values": (
        ["loss=hinge", "-c", "hydra", "beta=1", "-p", "hydra.run"],
        ["-c", "hydra", "-p", "hydra.run", "loss=hinge", "beta=1"],
    ),
    "config dir and name, long": (
        ["loss=hinge", "--config-dir", "sweeps", "--config-name", "smoke", "-m"],
        ["--config-dir", "sweeps", "--config-name", "smoke", "-m", "loss=hinge"],
    ),
    "config dir and name, short": (
        ["-cd", "sweeps", "loss=hinge", "-cn", "smoke", "beta=1"],
        ["-cd", "sweeps", "-cn", "smoke", "loss=hinge", "beta=1"],
    ),
    "value in the same argument": (
        ["beta=1", "--cfg=job", "loss=hinge", "--config-dir=sweeps"],
        ["--cfg=job", "--config-dir=sweeps", "beta=1", "loss=hinge"],
    ),
    "a value that looks like an override stays with its flag": (
        ["a=1", "--config-dir", "odd=dir", "b=2", "--package", "x=y"],
        ["--config-dir", "odd=dir", "--package", "x=y", "a=1", "b=2"],
    ),
    "info with a choice": (
        ["a=1", "--info", "defaults", "b=2"],
        ["--info", "defaults", "a=1", "b=2"],
    ),
    "info without a choice takes no override": (
        ["a=1", "--info", "b=2", "-m"],
        ["-m", "a=1", "b=2", "--info"],
    ),
    "help and resolve": (
        ["+experiment=smoke", "--resolve", "beta=1", "--help"],
        ["--resolve", "--help", "+experiment=smoke", "beta=1"],
    ),
    "an abbreviated long flag": (
        ["loss=hinge", "--config-n", "smoke", "--multi"],
        ["--config-n", "smoke", "--multi", "loss=hinge"],
    ),
    "every group keeps its order": (
        ["b=2", "-m", "a=1", "--cfg", "job", "c=3", "--resolve", "~d"],
        ["-m", "--cfg", "job", "--resolve", "b=2", "a=1", "c=3", "~d"],
    ),
    "overrides only": (
        ["+experiment=smoke", "loss=hinge", "++trainer.max_steps=2", "~callbacks.progress"],
        ["+experiment=smoke", "loss=hinge", "++trainer.max_steps=2", "~callbacks.progress"],
    ),
    "nothing": ([], []),
}


@pytest.mark.parametrize("typed, expected", SHAPES.values(), ids=SHAPES.keys())
def test_flags_come_first_in_their_long_form_then_the_overrides_in_their_order(typed, expected):
    overrides = get_args_parser().parse_args(expected).overrides
    line = flags_first(typed)
    flags = line[: len(line) - len(overrides)]
    assert line[len(flags) :] == overrides
    assert all(flag.startswith("--") and flag != "--" for flag in flags)


def test_a_flag_is_written_with_its_value_in_one_argument():
    typed = ["loss=hinge", "-c", "hydra", "--config-dir", "odd=dir", "-m", "--config-n", "smoke", "beta=1"]
    expected = ["--cfg=hydra", "--multirun", "--config-name=smoke", "--config-dir=odd=dir", "loss=hinge", "beta=1"]
    assert flags_first(typed) == expected


@pytest.mark.parametrize("typed, expected", SHAPES.values(), ids=SHAPES.keys())
def test_hydra_reads_the_reordered_line_as_the_line_in_order(typed, expected):
    parser = get_args_parser()
    assert parser.parse_args(flags_first(typed)) == parser.parse_args(expected)


def test_hydra_alone_refuses_a_flag_after_the_overrides(capsys):
    """What the reordering is for: Hydra's argparse stops reading flags at the first override."""
    with pytest.raises(SystemExit):
        get_args_parser().parse_args(["+experiment=smoke", "-m", "beta=0.1,1"])
    assert "unrecognized arguments: beta=0.1,1" in capsys.readouterr().err


def test_everything_after_a_double_dash_stays_an_override():
    assert flags_first(["a=1", "-m", "--", "b=2", "--cfg", "job"]) == ["--multirun", "--", "a=1", "b=2", "--cfg", "job"]
    parsed = get_args_parser().parse_args(flags_first(["a=1", "-m", "--", "b=2", "--cfg", "job"]))
    assert parsed.overrides == ["a=1", "b=2", "--cfg", "job"] and parsed.multirun and parsed.cfg is None


def test_an_unknown_flag_is_reported_as_hydra_reports_it(capsys):
    """The reordering hides no mistake."""
    with pytest.raises(SystemExit):
        flags_first(["a=1", "--bogus", "b=2"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


@pytest.mark.parametrize("typed", [["a=1", "--config-name"], ["a=1", "--config-name", "-m"]])
def test_a_flag_missing_its_value_is_still_an_error(typed, capsys):
    with pytest.raises(SystemExit):
        flags_first(typed)
    assert "expected one argument" in capsys.readouterr().err


def test_main_reorders_the_command_line_before_hydra_reads_it(monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "argv", ["gpo-lab", "+experiment=smoke", "beta=0.1,1", "-m"])
    monkeypatch.setattr(cli, "app", lambda: seen.append(list(sys.argv)))
    cli.main()
    assert seen == [["gpo-lab", "--multirun", "+experiment=smoke", "beta=0.1,1"]]


def imports_training(*args: str) -> bool:
    """Whether ``python -m gpo_lab ARGS`` would load the training modules (the module imported, nothing run)."""
    code = "import sys, gpo_lab.__main__; print('gpo_lab.run.train' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, check=True)
    return result.stdout.strip() == "True"


def test_help_and_printed_configs_answer_without_the_training_modules():
    assert not imports_training("--help")
    assert not imports_training("+experiment=smoke", "beta=0.3", "--cfg", "job")
    assert not imports_training("--info=defaults")
    assert imports_training("+experiment=smoke", "-m", "beta=0.1,1")


@pytest.fixture
def hydra_app(monkeypatch):
    """``python -m gpo_lab ARGS`` in this process: the real Hydra application, its output on stdout."""

    def run(*args: str) -> None:
        monkeypatch.setattr(sys, "argv", ["gpo_lab", *args])
        try:
            cli.main()
        finally:
            GlobalHydra.instance().clear()

    return run


def test_cfg_job_after_the_overrides_prints_the_composed_config(hydra_app, capsys):
    hydra_app("+experiment=smoke", "beta=0.3", "--cfg", "job")
    printed = capsys.readouterr().out
    assert "\nname: smoke\n" in printed and "\nbeta: 0.3\n" in printed
    assert not printed.startswith("hydra:") and "\nhydra:" not in printed  # the job's config, not Hydra's


def test_config_dir_and_name_after_an_override(hydra_app, capsys):
    hydra_app("beta=0.3", "-cd", str(ROOT / "sweeps"), "-cn", "smoke", "-c", "hydra")
    printed = capsys.readouterr().out
    assert "loss: logistic,hinge" in printed and "beta: 0.1,1" in printed  # the sweep file's grid


def test_info_after_the_overrides(hydra_app, capsys):
    hydra_app("+experiment=smoke", "--info", "defaults")
    printed = capsys.readouterr().out
    assert "experiment/smoke" in printed and "loss/logistic" in printed


@pytest.mark.slow
@pytest.mark.parametrize("where", ["first", "between the overrides"])
def test_multirun_flag_first_or_between_the_overrides_runs_the_sweep(where, tmp_path):
    """``+experiment=smoke -m beta=0.1,1`` is the line Hydra alone refuses (see above)."""
    rest = ["trainer.max_steps=2", "trainer.val_check_interval=2", f"hydra.sweep.dir={tmp_path}"]
    args = ["-m", "+experiment=smoke", "beta=0.1,1", *rest]
    if where != "first":
        args = ["+experiment=smoke", "-m", "beta=0.1,1", *rest]
    result = run_cli(args, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    named = "trainer.max_steps=2,trainer.val_check_interval=2"
    jobs = sorted(p.parent.name for p in tmp_path.glob("*/summary.json"))
    assert jobs == [f"beta=0.1,{named}", f"beta=1,{named}"]
    for job in jobs:
        summary = json.loads((tmp_path / job / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["steps"] == 2
        assert summary["beta"] == float(job.split(",")[0].removeprefix("beta="))
