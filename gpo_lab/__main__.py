"""``python -m gpo_lab``: the Hydra application over ``conf/``.

Hydra's flags (``-m``, ``--cfg job``, ``--config-dir DIR``, ...) may stand anywhere on the line:

    python -m gpo_lab +experiment=smoke loss=hinge beta=0.1
    python -m gpo_lab -m +experiment=smoke loss=logistic,hinge beta=0.1,1
    python -m gpo_lab +experiment=smoke -m loss=logistic,hinge beta=0.1,1
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import hydra
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from gpo_lab.errors import bounded, error_text, user_facing_cause
from gpo_lab.losses import register_loss_configs
from gpo_lab.run.dirnames import job_dirname_resolver
from gpo_lab.run.exit_codes import JobFailure

log = logging.getLogger("gpo_lab")
# An absolute path: ``python -m gpo_lab`` and the ``gpo-lab`` script (which imports this module) find the same tree.
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


# A job's directory is named by its overrides, as typed (never their resolved values): gpo_lab.run.dirnames.
OmegaConf.register_new_resolver("gpo_lab.job_dirname", job_dirname_resolver, replace=True)
register_loss_configs()  # loss=dpo, loss=ipo, loss=slic: the registry's aliases


def hydra_flags(parser: argparse.ArgumentParser | None = None) -> dict[str, argparse.Action]:
    """Every option string of Hydra's command line (``-m``, ``--cfg``, ...) and the action that parses it."""
    parser = parser or get_args_parser()
    return {option: action for action in parser._actions for option in action.option_strings}


def abbreviated(arg: str, flags: dict[str, argparse.Action]) -> argparse.Action | None:
    """The action of a long flag that ``arg`` abbreviates unambiguously (``--multi``), as argparse allows."""
    if not arg.startswith("--") or "=" in arg:
        return None
    actions = {id(action): action for option, action in flags.items() if option.startswith(arg)}
    return next(iter(actions.values())) if len(actions) == 1 else None


def flags_first(args: list[str], flags: dict[str, argparse.Action] | None = None) -> list[str]:
    """``args`` with Hydra's flags (and their values) before the overrides, each group in its order.

    Hydra's argparse reads its flags only up to the first override (``-m`` between two overrides
    is an "unrecognized argument"); moving them to the front lets them stand anywhere. A flag that
    takes a value keeps the argument after it, even one that looks like an override; ``--info``
    keeps it only when it is one of its choices. A flag still missing its value goes last, where
    argparse reads it as before (``--info`` alone shows everything; ``--config-name`` alone is an
    error). Everything from ``--`` on stays where it is, after the overrides.
    """
    flags = hydra_flags() if flags is None else flags
    front: list[str] = []
    overrides: list[str] = []
    last: list[str] = []
    position = 0
    while position < len(args):
        arg = args[position]
        position += 1
        if arg == "--":
            return front + overrides + last + args[position - 1 :]
        if not arg.startswith("-") or arg == "-":
            overrides.append(arg)
            continue
        action = flags.get(arg) or abbreviated(arg, flags)
        if action is None or action.nargs == 0:  # ``-m``, ``--cfg=job`` (holds its value), an unknown flag
            front.append(arg)  # argparse reports the unknown ones as before
            continue
        following = args[position] if position < len(args) else "-"  # (a flag is nobody's value, as for argparse)
        if not following.startswith("-") and (action.nargs is None or following in (action.choices or ())):
            front += [arg, following]
            position += 1
        else:
            last.append(arg)
    return front + overrides + last


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def app(cfg: DictConfig) -> JobFailure | None:
    """One job of the Hydra application (a run, or one job of a ``-m`` sweep).

    A failed job of a sweep returns its failure instead of raising, so the launcher runs the other
    jobs; :class:`~gpo_lab.run.exit_codes.ExitOnFailedJobs` then ends the sweep with code 1.
    A single run exits with code 2 on a fixable input error (one message) and 1 on any other.
    """
    from gpo_lab.run.train import train  # heavy imports after Hydra has parsed the command line

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        train(cfg, run_dir)
        return None
    except Exception as error:
        cause = user_facing_cause(error)
        message = bounded(str(cause)) if cause is not None else error_text(error)
        log.error("Run failed (%s): %s", run_dir, message)
        if multirun:
            return JobFailure(str(run_dir), message)  # also in its summary.json; the other jobs of the sweep go on
        if cause is not None:
            sys.exit(2)
        raise


def main() -> None:
    """The command line (``python -m gpo_lab``, ``gpo-lab``): Hydra's flags anywhere, then Hydra."""
    sys.argv[1:] = flags_first(sys.argv[1:])
    app()


if __name__ == "__main__":
    main()
