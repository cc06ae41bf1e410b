"""Benchmarks of the lifting step of Algorithm 1: the old step (a frozen copy, ``bench/frozen_step.py``)
against the ``paper`` and ``compact`` presets and compact's speed switches, inference, time to quality.

Run ``python -m bench.run --help``; results go to ``bench/results/`` and are tabulated in ``bench/README.md``.
"""
