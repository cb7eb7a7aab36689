"""A tabular preference bandit where KL, R_mu, reward and win rate are exact (``+experiment=bandit``)."""

from gpo_lab.tasks.bandit.builder import BanditDataModule, BanditModule, build_bandit_task
from gpo_lab.tasks.bandit.problem import BanditProblem, build_problem

__all__ = ["BanditDataModule", "BanditModule", "BanditProblem", "build_bandit_task", "build_problem"]
