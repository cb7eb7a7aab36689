"""Regularization-tracking callbacks: a shared sample bank, KL to the reference, and win rate."""

from gpo_lab.eval.kl import KLCallback, kl_estimates
from gpo_lab.eval.sample_bank import SampleBankCallback
from gpo_lab.eval.win_rate import WinRateCallback

__all__ = ["KLCallback", "SampleBankCallback", "WinRateCallback", "kl_estimates"]
