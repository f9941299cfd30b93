"""Where a DHP19 recording starts and stops: the special-event rules of ``Generate_DHP19.m`` and the index
range of ``extract_from_aedat.m`` (SensorsINI/DHP19), re-implemented from their behaviour.

Inputs are the polarity-event timestamps ``events`` and the special-event timestamps ``specials`` in file
order (raw microseconds), and ``n = 10 ms x number of Vicon samples``. By the number of special events:

* 0: the whole recording, ``start = events[0]``, ``stop = events[-1]`` (the script's fallback when the
  special field is missing or empty; the release has one such file, S14 session5 mov3).
* 1: ``s = specials[0]``; if ``s - min(events) > max(events) - s`` it is the stop and
  ``start = stop - n``, else the start and ``stop = start + n`` (S5 session4 mov2 and S16 session2 mov4
  have only the stop pulse, so their labels end at the special).
* 2 or 4: one pulse (the specials are repeats within 1 us); ``s = specials[0]`` with the same rule, using
  ``events[0]`` and ``events[-1]`` for the stream ends. If the timestamps overflow (``events[-1] <
  events[0]``, S14 session1 mov1): ``start = s``, ``stop = max(events)``.
* 3 or 5: ``start = specials[0]``, ``stop = specials[-1]``.
* more than 5: corrupt, skipped (S4 session3 mov4 and mov6 have hundreds).

Start and stop are then cast to uint32 (``ExtractEventsToFramesAndMeanLabels.m``), which clips a negative
start to 0. The kept events are the contiguous *index range* from the first event with ``t > start`` to the
last with ``t < stop`` (strict at both ends); with an overflow it runs from the first event with
``t == start`` to the first with ``t == stop`` (where no event has exactly that time, which would stop the
MATLAB script, the nearest one inside is used).
"""
from __future__ import annotations

import numpy as np

from ..errors import DataError

LABEL_PERIOD_US = 10_000  # Vicon at 100 Hz
MAX_SPECIAL_EVENTS = 5  # Generate_DHP19.m skips recordings with more
UINT32_MAX = (1 << 32) - 1


def overflows(events: np.ndarray) -> bool:
    """DHP19's overflow test: the last polarity timestamp is below the first."""
    return bool(events[-1] < events[0])


def cut_times(specials: np.ndarray, events: np.ndarray, num_labels: int, clip_uint32: bool = True,
              path="") -> tuple[int, int, str, list[str]]:
    """``(start, stop, rule, notes)`` by the special-event count (module docstring); DataError if corrupt."""
    specials = np.asarray(specials, dtype=np.int64)
    events = np.asarray(events, dtype=np.int64)
    n = int(num_labels) * LABEL_PERIOD_US
    count = int(specials.size)
    notes: list[str] = []
    if count > MAX_SPECIAL_EVENTS:
        raise DataError(path, f"corrupt: {count} special events (more than {MAX_SPECIAL_EVENTS}; "
                              "Generate_DHP19.m skips such recordings)")
    if count == 0:
        start, stop, rule = int(events[0]), int(events[-1]), "no special event: whole recording"
        notes.append("no special (sync) events: the whole recording is used (labels from its first event)")
    elif count in (3, 5):
        start, stop, rule = int(specials[0]), int(specials[-1]), f"{count} special events: first to last"
    else:
        special = int(specials[0])
        if count == 1:
            head, tail = special - int(events.min()), int(events.max()) - special
        else:
            head, tail = special - int(events[0]), int(events[-1]) - special
        if count != 1 and overflows(events):
            start, stop = special, int(events.max())
            rule = f"{count} special events, timestamp overflow: special to the last event before the overflow"
        elif head > tail:
            start, stop = special - n, special
            rule = f"{count} special event(s) nearer the end: stop, start = stop - {num_labels} labels x 10 ms"
        else:
            start, stop = special, special + n
            rule = f"{count} special event(s) nearer the start: start, stop = start + {num_labels} labels x 10 ms"
    if start < 0 or (clip_uint32 and stop > UINT32_MAX):
        clipped = (max(start, 0), min(stop, UINT32_MAX) if clip_uint32 else stop)
        notes.append(f"cut {start}..{stop} us clipped to {clipped[0]}..{clipped[1]} us (uint32 times)")
        start, stop = clipped
    return start, stop, rule, notes


def cut_range(events: np.ndarray, start: int, stop: int, path="") -> tuple[int, int]:
    """``(first, last)`` inclusive indices of the kept events (module docstring); DataError when empty."""
    events = np.asarray(events, dtype=np.int64)
    if not overflows(events) and events[-1] != events[0]:
        after, before = events > start, events < stop
        if not after.any() or not before.any():
            raise DataError(path, f"empty cut: no event strictly inside {start}..{stop} us")
        first = int(np.argmax(after))
        last = int(events.size - 1 - np.argmax(before[::-1]))
    else:
        first = _first_match(events, start, events >= start)
        wrap = np.flatnonzero(np.diff(events) < 0)
        end = int(wrap[0]) + 1 if wrap.size else events.size  # the events before the first backwards jump
        last = _first_match(events[:end], stop, None)
        if last < 0:
            inside = np.flatnonzero(events[:end] <= stop)
            last = int(inside[-1]) if inside.size else -1
    if first < 0 or last < first:
        raise DataError(path, f"empty cut: no event between {start} and {stop} us")
    return first, last


def _first_match(events: np.ndarray, value: int, fallback) -> int:
    """Index of the first event at exactly ``value``, else of the first ``fallback`` event, else -1."""
    for mask in (events == value, fallback):
        if mask is not None and mask.any():
            return int(np.argmax(mask))
    return -1
