"""A from-scratch NumPy network for MNIST and the pipeline around it (DVC, Hydra, MLflow)."""
