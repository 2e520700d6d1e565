"""Progress of a transfer at its edges: the rate window at its exact bounds, a transfer
that stalls or starts over, and sizes as people read them at every unit's boundary."""

from __future__ import annotations

import pytest

from peerchat.policy.progress import RATE_WINDOW, ProgressMeter, format_size


@pytest.mark.parametrize(("size", "done"), [(10, 11), (10, -1), (-1, 0)])
def test_a_meter_refuses_a_start_outside_the_size(size: int, done: int) -> None:
    with pytest.raises(ValueError, match=r"^progress needs 0 <= done <= size$"):
        ProgressMeter(size, done, now=0.0)


def test_a_report_carries_what_is_done_and_the_size() -> None:
    meter = ProgressMeter(1000, 0, now=0.0)
    meter.update(250, 1.0)
    report = meter.report()
    assert (report.done, report.size, report.percent) == (250, 1000, 25.0)


def test_bytes_said_past_the_size_or_below_zero_are_bounded() -> None:
    meter = ProgressMeter(100, 0, now=0.0)
    meter.update(0, 1.0)
    assert meter.done == 0
    meter.update(-5, 2.0)
    assert meter.done == 0
    meter.update(500, 3.0)
    assert meter.done == 100


def test_a_stall_keeps_the_rate_measured_so_far_and_no_time_left_at_zero() -> None:
    meter = ProgressMeter(1000, 0, now=0.0)
    meter.update(100, 1.0)
    meter.update(100, 2.0)  # nothing new: not a start over
    assert meter.report().rate == pytest.approx(50.0)
    stalled = ProgressMeter(1000, 100, now=0.0)
    stalled.update(100, 1.0)
    report = stalled.report()
    assert report.rate == 0.0
    assert report.seconds_left is None


def test_a_slow_link_still_gets_a_time_left() -> None:
    meter = ProgressMeter(10, 0, now=0.0)
    meter.update(1, 2.0)  # half a byte a second
    report = meter.report()
    assert report.rate == pytest.approx(0.5)
    assert report.seconds_left == pytest.approx(18.0)


def test_a_transfer_that_starts_over_forgets_the_old_samples() -> None:
    meter = ProgressMeter(1000, 0, now=0.0)
    meter.update(500, 1.0)
    meter.update(100, 2.0)
    assert meter.report().rate is None  # one sample: nothing to measure yet
    meter.update(300, 4.0)
    assert meter.report().rate == pytest.approx(100.0)


def test_the_rate_spans_one_sample_at_or_before_the_window_start() -> None:
    meter = ProgressMeter(10_000, 0, now=0.0)
    meter.update(100, 1.0)
    meter.update(200, 1.0 + RATE_WINDOW + 4)
    # (0, 0) is dropped: (1, 100) is already at or before the window's start.
    assert meter.report().rate == pytest.approx(100 / (RATE_WINDOW + 4))


def test_a_sample_exactly_at_the_window_start_is_the_one_kept() -> None:
    meter = ProgressMeter(10_000, 0, now=0.0)
    meter.update(50, 5.0)
    meter.update(200, 5.0 + RATE_WINDOW)
    assert meter.report().rate == pytest.approx(150 / RATE_WINDOW)


@pytest.mark.parametrize(
    ("size", "said"),
    [
        (0, "0 bytes"),
        (1, "1 byte"),
        (2, "2 bytes"),
        (999, "999 bytes"),
        (1000, "1.0 kB"),
        (1001, "1.0 kB"),
        (9_949, "9.9 kB"),
        (9_999, "10.0 kB"),
        (10_000, "10 kB"),
        (10_500, "10 kB"),
        (10_600, "11 kB"),
        (999_499, "999 kB"),
        (999_500, "1.0 MB"),
        (999_700, "1.0 MB"),
        (2_400_000, "2.4 MB"),
        (12_345_678, "12 MB"),
        (3_000_000_000, "3.0 GB"),
        (45_000_000_000_000, "45 TB"),
        (7 * 10**15, "7.0 PB"),
        (10**18, "1000 PB"),
        (5 * 10**20, "500000 PB"),
    ],
)
def test_sizes_for_people(size: int, said: str) -> None:
    assert format_size(size) == said
