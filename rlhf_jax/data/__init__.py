"""Data: tokenizers, the built-in task, loaders for demonstrations, batching."""
