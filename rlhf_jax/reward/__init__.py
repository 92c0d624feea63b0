"""The reward model: losses, combination of several models, evaluation, Elo ratings."""
