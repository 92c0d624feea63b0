"""RL fine-tuning arithmetic (KL, advantages, PPO/A2C losses), rollouts and the update step."""
