"""The wall clock set back is noticed and reported until it has caught up (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from device.rules.clock_watch import ClockWatch

T = datetime(2026, 11, 22, 13, 25, tzinfo=UTC)


def test_a_clock_set_back_is_a_problem_until_it_catches_up():
    watch = ClockWatch()
    assert watch.check(T) is None
    assert watch.check(T - timedelta(seconds=30)) is None, "NTP slews and small steps are not a problem"
    problem = watch.check(T - timedelta(hours=3))
    assert problem is not None and problem.startswith("the wall clock was set back by 3 h 0 min")
    assert watch.check(T - timedelta(minutes=5)) is not None, "still behind the time it had reached"
    assert watch.check(T + timedelta(seconds=1)) is None, "caught up"
