"""torchwin: build, test and publish PyTorch conda packages for Windows (VS2017 + CUDA 9 + MKL)."""

__version__ = "0.1.0"
