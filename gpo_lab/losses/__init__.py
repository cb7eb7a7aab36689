"""The GPO loss family and the field around it, one concept per module (import each name from its module).

catalog          every loss's name and the six members' exact derivatives, without torch (the report reads it)
base             PreferenceLoss, the interface every loss has: pair_loss(logps, beta), uses_reference, derivatives
function_check   the start-up check of a user's f: finite, convex, f'(0) < 0
gpo              the paper's six f and GPOLoss, f(beta * rho) for any of them or a user's f
margin_losses    MarginLoss: f of one margin, shifted, with label noise (cDPO, SimPO, ORPO's term, ...)
pair_functions   losses of the chosen and rejected log-ratios separately (NCA, BCO, SPPO, APO, DPO-Positive)
aot              AOT, a loss of the batch's sorted log-ratios
chosen_nll       the chosen response's negative log-likelihood (sft, RPO's and ORPO's term)
weighted_sum     a weighted sum of losses (RPO, ORPO, TRL's loss_weights)
named_losses     a loss by its loss=<name> option, and derivatives_of(name)
config_store     the aliases (loss=dpo, ...) as Hydra options

A named loss is its ``conf/loss/<name>.yaml``: adding one is docs/losses.md's "Adding a loss".
"""
