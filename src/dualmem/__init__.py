"""dualmem: a benchmark suite and reference implementation of a dual-memory continual learner."""

__version__ = "0.1.0"
