"""The memory and compute planner: `python -m rlhf_jax.plan --config=... [--device=h100]`."""
