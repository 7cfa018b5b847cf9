"""Side-by-side timing for benchmarks: warm every case, then interleave repeats and take medians."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved_medians(cases: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per case; cases alternate in every round so drift hits all of them alike."""
    for fn in cases.values():
        fn()  # warm-up: weight patching, caches
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}
