"""Message-arrival traces for the scaling simulator: seconds from the start, one per message.

Shipped generators (seeded, so a run is reproducible): ``campaign`` (a steady base, then a
campaign push that brings 50x the usual rate within a minute and fades over minutes) and
``daily`` (a day's curve: quiet night, lunch and evening peaks). ``load_csv`` reads a real
trace: one row per message, its arrival time in the first column (seconds, or an ISO time).
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from functions.common.errors import ConfigurationError


def poisson_arrivals(rate: Callable[[float], float], duration_s: float, seed: int) -> list[float]:
    """A non-homogeneous Poisson process, second by second: each second's count is Poisson
    with that second's rate, spread uniformly inside it."""
    rng = random.Random(seed)
    arrivals: list[float] = []
    for second in range(int(duration_s)):
        mean = rate(second + 0.5)
        # Knuth's method for small means, a normal approximation for large ones.
        if mean < 30:
            count, threshold, product = -1, math.exp(-mean), 1.0
            while product > threshold:
                count += 1
                product *= rng.random()
        else:
            count = max(0, round(rng.gauss(mean, math.sqrt(mean))))
        arrivals.extend(sorted(second + rng.random() for _ in range(count)))
    return arrivals


def campaign_rate(base: float = 0.5, factor: float = 50.0, start_s: float = 600.0, ramp_s: float = 60.0,
                  decay_s: float = 600.0) -> Callable[[float], float]:
    """``base`` msgs/s; at ``start_s`` it climbs to ``factor`` x base within ``ramp_s``, then
    fades back with time constant ``decay_s``."""
    def rate(t: float) -> float:
        if t < start_s:
            return base
        if t < start_s + ramp_s:
            return base + (factor - 1) * base * (t - start_s) / ramp_s
        return base + (factor - 1) * base * math.exp(-(t - start_s - ramp_s) / decay_s)
    return rate


def daily_rate(peak: float = 20.0) -> Callable[[float], float]:
    """A day from midnight: near-idle at night, a lunch peak and a higher evening peak."""
    def bump(t: float, centre_h: float, width_h: float) -> float:
        return math.exp(-0.5 * ((t / 3600.0 - centre_h) / width_h) ** 2)
    def rate(t: float) -> float:
        return peak * (0.02 + 0.25 * bump(t, 9.5, 1.5) + 0.7 * bump(t, 12.5, 1.2) + 1.0 * bump(t, 20.5, 1.8))
    return rate


def campaign_trace(seed: int = 0) -> list[float]:
    return poisson_arrivals(campaign_rate(), 3600, seed)


def daily_trace(seed: int = 0) -> list[float]:
    return poisson_arrivals(daily_rate(), 86400, seed)


SHIPPED = {"campaign": campaign_trace, "daily": daily_trace}


def load_csv(path: Path) -> list[float]:
    """Arrival times from the first column, rebased to start at zero; a header row is skipped."""
    times: list[float] = []
    kinds: set[str] = set()  # seconds or ISO times; one file must not mix them
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            for number, row in enumerate(csv.reader(handle), start=1):
                if not row or not row[0].strip():
                    continue
                cell = row[0].strip()
                try:
                    value, kind = float(cell), "seconds"
                except ValueError:
                    try:
                        value, kind = datetime.fromisoformat(cell).timestamp(), "iso"
                    except ValueError:
                        if number == 1:
                            continue  # a header
                        raise ConfigurationError(f"{path}:{number}: not a time: {cell[:40]!r}") from None
                if kinds and kind not in kinds:
                    raise ConfigurationError(f"{path}:{number}: not a time like the rows before it "
                                             f"(seconds and ISO times mixed): {cell[:40]!r}")
                kinds.add(kind)
                times.append(value)
    except OSError as exc:
        raise ConfigurationError(f"cannot read trace {path}: {exc.strerror}") from None
    if not times:
        raise ConfigurationError(f"{path}: no arrivals in it")
    times.sort()
    return [t - times[0] for t in times]


def load_trace(name: str, seed: int = 0) -> list[float]:
    if name in SHIPPED:
        return SHIPPED[name](seed)
    return load_csv(Path(name))
