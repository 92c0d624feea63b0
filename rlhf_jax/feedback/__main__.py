"""`python -m rlhf_jax.feedback <verb>`: see `cli.py`."""

from rlhf_jax.feedback.cli import main

main()
