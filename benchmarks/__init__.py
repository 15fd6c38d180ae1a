"""Benchmarks of the chatkit-stores SQL stores against the baselines users would write.

Run ``python -m benchmarks --help``. Not part of the wheel; see ``benchmarks/README.md``.
"""
