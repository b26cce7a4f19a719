"""Where a network runs: device checks, the memory allocator, memory layouts and latency timing."""
