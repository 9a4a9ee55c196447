"""Benchmarks that go beyond ``zoo eval``: ablations and comparisons with classical methods.

They may need the test/benchmark extras (scikit-image, bm3d), imported only when a benchmark runs.
"""
