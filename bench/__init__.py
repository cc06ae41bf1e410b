"""Benchmarks of issue 6: the lifting step of Algorithm 1, plain fp32 eager vs optimised, side by side.

Run ``python -m bench.run --help``; results go to ``bench/results/`` and are tabulated in ``bench/README.md``.
"""
