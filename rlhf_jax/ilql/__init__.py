"""Implicit Language Q-Learning (Snell et al. 2022): offline RL from a fixed set of scored
responses, with Q and V heads on the policy's trunk and advantage-shaped decoding."""
