"""``python -m gpo_lab``: the Hydra application over ``conf/``.

Hydra's flags (``-m``, ``--cfg job``, ``--config-dir DIR``, ...) may stand anywhere on the line:

    python -m gpo_lab +experiment=smoke loss=hinge beta=0.1
    python -m gpo_lab -m +experiment=smoke loss=logistic,hinge beta=0.1,1
    python -m gpo_lab +experiment=smoke -m loss=logistic,hinge beta=0.1,1
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from gpo_lab.config_dir import CONF_DIR
from gpo_lab.errors import bounded, error_text, user_facing_cause
from gpo_lab.losses.config_store import register_loss_configs
from gpo_lab.run.dirnames import job_dirname_resolver
from gpo_lab.run.exit_codes import JobElsewhere, JobFailure, stopped_line
from gpo_lab.run.signals import Interrupted, in_launching_process, received, signal_name, sweep_dir
from gpo_lab.store.lock import RunDirectoryBusy
from gpo_lab.tasks.tldr_stand_ins import tldr_stand_in

# Training's modules (torch, Lightning, transformers) take seconds to import, and a line with one of these flags
# never runs a job (Hydra only prints help, a config or information): it answers without them. Any other line
# imports them here, once; the resolvers below are registered before Hydra composes a config either way.
ANSWERED_BY_HYDRA = ("--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--info", "-i", "--shell-completion")
if not any(arg.split("=", 1)[0] in ANSWERED_BY_HYDRA for arg in sys.argv[1:]):
    from gpo_lab.run.train import train

log = logging.getLogger("gpo_lab")


# A job's directory is named by its overrides, as typed (never their resolved values): gpo_lab.run.dirnames.
OmegaConf.register_new_resolver("gpo_lab.job_dirname", job_dirname_resolver, replace=True)
# +experiment=tldr_rehearsal's local stand-ins for the TL;DR study's downloads, built on first use.
OmegaConf.register_new_resolver("gpo_lab.tldr_stand_in", tldr_stand_in, replace=True)
register_loss_configs()  # loss=dpo, loss=ipo, loss=slic: the registry's aliases


def _is_override(arg: str) -> bool:
    """Hydra's override shapes: ``key=value``, ``+key=value``, ``~key``."""
    return not arg.startswith("-") and ("=" in arg or arg.startswith("~"))


def _bare_info_last(args: list[str]) -> list[str]:
    """A bare ``--info`` (``-i``) before an override moved after the overrides: it takes a value only optionally,
    and argparse would take the override for it (an invalid choice); alone at the end it shows everything."""
    end = args.index("--") if "--" in args else len(args)
    bare = {i for i in range(end - 1) if args[i] in ("--info", "-i") and _is_override(args[i + 1])}
    if not bare:
        return args
    kept = [arg for i, arg in enumerate(args[:end]) if i not in bare]
    return [*kept, "--info", *args[end:]]


def flags_first(args: list[str]) -> list[str]:
    """``args`` as Hydra's argparse needs them: its flags (``--multirun``, ``--cfg=job``, ...) before the overrides.

    Hydra's parser reads its flags only up to the first override (``-m`` between two overrides is an
    "unrecognized argument"). The same parser's ``parse_intermixed_args`` reads flags anywhere (values,
    ``--flag=value`` and abbreviations included) and reports an unknown flag or a missing value as
    Hydra would; each flag set is written back in its long form (argparse names a flag's attribute
    after it: ``config_dir`` is ``--config-dir``), then the overrides, in their order.
    """
    parsed = vars(get_args_parser().parse_intermixed_args(_bare_info_last(args)))
    overrides = parsed.pop("overrides")
    flags = [
        "--" + name.replace("_", "-") + ("" if value is True else f"={value}")
        for name, value in parsed.items()
        if value is not None and value is not False
    ]
    separator = ["--"] if any(arg.startswith("-") for arg in overrides) else []  # those written after ``--``
    return flags + separator + overrides


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def app(cfg: DictConfig) -> JobFailure | JobElsewhere | None:
    """One job of the Hydra application (a run, or one job of a ``-m`` sweep).

    A failed job of a sweep returns its failure instead of raising, so the launcher runs the other
    jobs; :class:`~gpo_lab.run.exit_codes.ExitOnFailedJobs` then ends the sweep with code 1. A job that
    another process trains is left to it. A single run exits with code 2 on a fixable input error (one
    message), 1 on any other, and 143 (SIGTERM) or 130 (SIGINT) when a signal stopped it (``interrupted``).
    A signal ends a sweep in the process that launched it, however its jobs run (:mod:`gpo_lab.run.signals`).
    """
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        train(cfg, run_dir)
        if multirun and received() is not None and in_launching_process():
            raise Interrupted(received())  # it ended its job; the sweep starts no other
        return None
    except Interrupted as stop:
        if not multirun:
            print(
                f"The run was stopped by {signal_name(stop.signum)}: {run_dir} is interrupted; "
                "the same command resumes it from its last checkpoint.",
                file=sys.stderr,
            )
            sys.exit(stop.exit_code)
        if in_launching_process():
            raise
        if os.environ.get("SLURM_JOB_ID"):
            # SLURM sends TERM before it requeues or preempts a job: end with no result, so that submitit's
            # launcher waits for the requeued job, which resumes from the last checkpoint.
            sys.exit(stop.exit_code)
        return None  # a worker: its job says interrupted, and the launching process ends the sweep
    except RunDirectoryBusy as busy:
        if not multirun:
            log.error("Run failed (%s): %s", run_dir, busy)
            sys.exit(2)
        log.warning("%s is running in another process; this sweep leaves it to that one.", run_dir)
        return JobElsewhere(str(run_dir))
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
    if "--multirun" in sys.argv and any(arg.startswith("--cfg") for arg in sys.argv):
        print(
            "--cfg prints the config of one job, and -m (--multirun) asks for a sweep of many: drop -m and give "
            "one value per swept key to see that job's config (python -m gpo_lab --cfg job +experiment=smoke "
            "loss=logistic beta=0.1); each job of a sweep also writes its own config.yaml.",
            file=sys.stderr,
        )
        sys.exit(2)
    try:
        app()
    except Interrupted as stop:  # a sweep (a run exits in app)
        print(
            stopped_line(stop, sweep_dir()) if sweep_dir() else f"Stopped by {signal_name(stop.signum)}.",
            file=sys.stderr,
        )
        sys.exit(stop.exit_code)


if __name__ == "__main__":
    main()
