"""A from-scratch NumPy network for MNIST and the pipeline around it (DVC, Hydra, MLflow)."""

from . import numerics

numerics.configure()  # before anything loads NumPy: which BLAS kernels, threads and SIMD code it uses
