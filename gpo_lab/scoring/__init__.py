"""Scoring: log pi(y|x) of preference batches, summed over response tokens, in every batch layout
(plain rows, prefix-shared packed rows, encoder-decoder rows)."""
