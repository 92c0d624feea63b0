"""rlhf_jax: the RLHF recipe (pretrain, SFT, reward model, RL fine-tuning) in JAX/Flax."""
__version__ = "0.1.0"
