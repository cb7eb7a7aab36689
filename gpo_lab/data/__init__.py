"""Preference data: sources, schemas, tokenization with truncation, and the Lightning data module."""

from gpo_lab.data.datamodule import PreferenceDataModule

__all__ = ["PreferenceDataModule"]
