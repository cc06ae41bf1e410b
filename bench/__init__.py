"""Benchmarks of the lifting step of Algorithm 1: fp32 eager vs its speed switches, and the two presets.

Run ``python -m bench.run --help`` (the step and its switches, inference, time to quality) or
``python -m bench.presets`` (the paper and compact presets); results go to ``bench/results/`` and are
tabulated in ``bench/README.md``.
"""
