"""Step 6: evaluation — generation backends, answer scoring and the benchmarks."""
