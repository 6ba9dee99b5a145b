"""digitloc.benchmarks."""
