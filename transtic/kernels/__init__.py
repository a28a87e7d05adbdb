"""Native CPU kernels for the inference fast paths, compiled on first use.

Optional by design: where no C++ compiler is found, the callers keep PyTorch's
operators (see :mod:`transtic.kernels.build`).
"""

from .attention import available, window_attention
from .build import KernelBuildError, set_cache_dir

__all__ = ["KernelBuildError", "available", "set_cache_dir", "window_attention"]
