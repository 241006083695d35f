"""Order analytics: counts, durations and revenue per offering, from events alone."""
