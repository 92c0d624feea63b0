"""Training stages: the state and optimizer, the language-model steps, and the stage loops."""
