"""Triton kernels of the Mamba layers (importing this package needs ``triton``)."""
