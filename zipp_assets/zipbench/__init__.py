"""ZIPBench: the benchmark build, rewriting methods, generation, metrics and report."""
