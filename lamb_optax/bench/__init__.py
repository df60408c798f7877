"""What ``scripts/benchmark_*.py`` share: timed runners that interleave rivals in one process,
the Hugging Face peers they compare with, and a profile reader that attributes kernel time."""
