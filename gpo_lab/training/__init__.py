"""What every task's training step is made of: the LightningModule of a policy, a frozen reference and
a preference loss, its optimizer, the pair statistics it logs, and the stop at a non-finite value."""
