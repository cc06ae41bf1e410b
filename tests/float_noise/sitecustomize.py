"""Stress test for processor-dependent outputs: perturb the last bits of PyTorch's float kernels.

Convolutions, matrix products and long reductions round differently on another processor (AVX2 vs AVX-512,
Intel vs AMD oneDNN paths) and with another thread count. The other machine's exact bits cannot be reproduced
here, but their *size* can: with ``MIST_FLOAT_NOISE=<seed>`` set and this folder on ``PYTHONPATH``, every
Python process (pytest and the notebook kernels nbval starts) multiplies the float outputs of those kernels,
forward and backward, by ``1 + eps * N(0, 1)`` (``eps`` from ``MIST_FLOAT_NOISE_EPS``, default 1e-6, a few
float32 ulps). An output that changes under a few seeds can change on another machine: print it at a stable
precision or check it with a tolerance. Integer-valued results (counts made with float sums) are left exact,
as every processor computes them exactly.

Usage (``make test-noise SEED=2`` runs the chapters this way; the path must be absolute, as nbval starts
each kernel in the notebook's folder)::

    MIST_FLOAT_NOISE=1 PYTHONPATH=$PWD/tests/float_noise pytest chapters

The noise is a function of each exact result, as a processor's rounding is: the same computation run twice
gets the same bits, so two code paths that agree on every machine still agree here. It is a diagnostic, not a
CI check: it is stronger than the difference between two real processors, and it slows every kernel down.
"""

import os

_KERNELS = (
    "convolution",
    "addmm",
    "mm.",
    "bmm",
    "baddbmm",
    "sum",
    "mean",
    "softmax",
    "grid_sampler",
    "upsample",
    "avg_pool",
    "group_norm",
    "layer_norm",
    "var",
    "std",
    "norm",
    "cumsum",
    "mse_loss",
    "cross_entropy",
    "nll_loss",
)


def _install(seed: int, eps: float) -> None:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    def jitter(value):
        if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.numel() == 0:
            return value
        if value.device.type != "cpu" or bool((value == value.round()).all()):
            return value
        # The noise is a function of the exact result, as a processor's rounding is: the same computation
        # run twice gets the same bits, so two code paths that agree on every real machine still agree.
        bits = int(value.detach().float().contiguous().view(torch.int32).sum())
        generator = torch.Generator().manual_seed((seed * 1_000_003 + bits) % 2**63)
        noise = torch.randn(value.shape, generator=generator, dtype=value.dtype)
        return value + value.abs() * eps * noise

    class FloatNoise(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = str(func)
            if not any(k in name for k in _KERNELS) or "_.default" in name or ".out" in name:
                return out
            with torch.no_grad():
                if isinstance(out, tuple):
                    return tuple(jitter(o) for o in out)
                return jitter(out)

    FloatNoise().__enter__()


if os.environ.get("MIST_FLOAT_NOISE"):
    _install(int(os.environ["MIST_FLOAT_NOISE"]), float(os.environ.get("MIST_FLOAT_NOISE_EPS", "1e-6")))
