"""Benchmarks: Strowger measured side by side with raw peers in the same run."""
