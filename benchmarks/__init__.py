"""Benchmarks: each module measures one thing next to a baseline from the same run; JSON goes to results/."""
