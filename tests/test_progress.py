"""The progress display on a fake clock: no ETA before it means something, a rate from the first finished item, and
a log line naming each stage as it begins."""

from __future__ import annotations

import pytest

from g2g.progress import MIN_ITEMS, MIN_SECONDS, BatchProgress


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _bar(clock: Clock, total: int = 100, **kw) -> BatchProgress:
    bar = BatchProgress("mix", "pairs", total, clock=clock, **kw)
    assert bar.bar is None and bar.log  # pytest's stderr is not a terminal: the log mode under test
    return bar


def test_no_eta_on_the_first_update_even_after_a_long_start(capsys):
    clock = Clock()
    bar = _bar(clock)
    clock.now += 1000  # model loading and warm-up: 1000 s before the first item is done
    bar.advance(ok=1)
    assert bar.eta() is None
    line = capsys.readouterr().err
    assert "mix: 1/100 pairs" in line and "ETA --" in line  # the first line prints at once, without an ETA
    clock.now += 1  # one more item a second later: still too few items and seconds for a rate
    bar.advance(ok=1)
    assert bar.eta() is None


def test_eta_is_remaining_items_over_the_rate_since_the_first_item():
    clock = Clock()
    bar = _bar(clock, total=100, every=1e9)
    clock.now += 600  # start-up: must not count in the rate
    bar.advance(ok=1)
    for _ in range(19):  # then a steady 2 items/s
        clock.now += 0.5
        bar.advance(ok=1)
    assert bar.done == 20
    expected = (100 - 20) / 2.0
    assert bar.eta() == pytest.approx(expected, rel=0.1)  # 40 s; from t0 the rate would say ~2400 s


def test_eta_waits_for_a_few_items_and_a_few_seconds():
    clock = Clock()
    bar = _bar(clock, every=1e9)
    bar.advance(ok=1)
    clock.now += MIN_SECONDS * 4  # plenty of seconds, but too few items
    bar.advance(ok=MIN_ITEMS - 1)
    assert bar.eta() is None
    fast = _bar(clock, every=1e9)
    fast.advance(ok=1)
    clock.now += MIN_SECONDS / 10  # plenty of items, too few seconds
    fast.advance(ok=50)
    assert fast.eta() is None
    clock.now += MIN_SECONDS
    fast.advance(ok=1)
    assert fast.eta() is not None


def test_a_short_run_ends_on_its_whole_rate_not_a_dash(capsys):
    clock = Clock()
    bar = _bar(clock, total=9)
    clock.now += 3.0  # nine photos, all finished in one batch three seconds after the start
    bar.advance(ok=9)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "9/9 pairs, 3.0 pairs/s, ETA 0:00:00" in line
    unfinished = _bar(clock, total=10)
    clock.now += 3.0
    unfinished.advance(ok=9)  # not complete: too few items and seconds for a rate, as before
    assert unfinished.eta() is None


def test_a_stage_change_prints_a_line_with_the_stage_and_its_counts(capsys):
    clock = Clock()
    bar = _bar(clock, total=30, every=1e9)
    detect = bar.stage("detecting identity photos", 59, unit="photos")
    assert "mix: detecting identity photos 0/59 photos" in capsys.readouterr().err
    detect(12)
    assert "mix: detecting identity photos 12/59 photos" in capsys.readouterr().err  # the first count: at once
    detect(1)
    assert capsys.readouterr().err == ""  # then the log waits for `every` seconds
    bar.stage("mixing pairs")
    bar.advance(ok=9, skipped=1)
    err = capsys.readouterr().err
    assert "mix: mixing pairs 0/30 pairs" in err  # the stage counts the main items
    bar.stage("detecting identity photos")  # entering it again keeps its count, and prints no second header
    assert capsys.readouterr().err == ""
    assert bar.eta() is None
    detect(46)
    assert "mix: detecting identity photos 59/59 photos" in capsys.readouterr().err  # a finished count prints
    bar.close()


def test_a_stage_keeps_its_own_rate():
    clock = Clock()
    bar = _bar(clock, total=10, every=1e9)
    step = bar.stage("detecting pose photos", 64, unit="photos")
    clock.now += 30  # loading the detector
    step(8)
    for _ in range(4):
        clock.now += 2.0  # 4 photos/s
        step(8)
    assert bar.eta() == pytest.approx((64 - 40) / 4.0, rel=0.1)
    bar.stage("mixing pairs")
    assert bar.eta() is None  # the pairs have no rate yet
