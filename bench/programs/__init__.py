"""Programs the benchmarks start as scripts (python bench/programs/NAME.py), one concern each."""
