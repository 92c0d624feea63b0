"""Direct preference optimisation: the policy learns from comparisons without a reward model."""
