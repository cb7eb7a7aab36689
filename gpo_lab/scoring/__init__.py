"""Scoring: log pi(y|x) of preference batches, summed over response tokens, in every batch layout
(plain rows, prefix-shared packed rows, encoder-decoder rows). A batch scores itself: ``batch.score(model)``."""

from gpo_lab.scoring.batches import PairBatch, PairLogps, PlainPairs
from gpo_lab.scoring.packing import PackedPairs
from gpo_lab.scoring.seq2seq import Seq2SeqPairs

__all__ = ["PackedPairs", "PairBatch", "PairLogps", "PlainPairs", "Seq2SeqPairs"]
