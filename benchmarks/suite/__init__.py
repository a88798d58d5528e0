"""The pieces of the benchmarks: workloads, one adapter per library, checking, timing, report.

Nothing here imports NumPy at package import time, so `suite.threads` can pin the thread
pools before any numerical library is loaded.
"""
