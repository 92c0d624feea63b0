"""The human-feedback labeling web app (an optional extra: `pip install -e ".[feedback]"`).

Labelers rate, flag and rank a policy's answers (InstructGPT's page), choose between two (hh-rlhf's
pairwise page) or write demonstrations; answers are stored in SQLite or PostgreSQL and exported
as the files the reward and SFT stages read, with inter-labeler agreement and bias reported.
One command line: `python -m rlhf_jax.feedback {init,adduser,import,serve,export,agreement,
simulate}` (see docs/feedback.md).

Not for: training. Nothing here imports JAX, and no training module imports this package; the
exported files are the whole interface.
"""
