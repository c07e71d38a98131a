"""RetryPolicy's delays and LoadRetry's attempts, on task.Clock."""

import random

from twisted.internet import defer, task

from sipdisp.storage.retry import CONFIG_LOAD, RECONNECT, STATE_LOAD, LoadRetry, RetryPolicy


def test_backoff_doubles_up_to_the_maximum():
    """Without jitter the delays are initial, doubled each attempt, capped."""
    policy = RetryPolicy(0.25, 5.0)
    assert [policy.delay(n) for n in range(7)] == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_a_policy_without_maximum_is_a_fixed_pause():
    """RetryPolicy(s) waits s seconds before every attempt."""
    assert {RetryPolicy(2.0).delay(n) for n in range(5)} == {2.0}


def test_jitter_stays_within_its_band():
    """Jitter scales each delay by a factor within 1 +/- jitter."""
    policy = RetryPolicy(1.0, 8.0, jitter=0.5, random_source=random.Random(1))
    delays = [policy.delay(0) for _ in range(50)]
    assert all(0.5 <= d <= 1.5 for d in delays) and len(set(delays)) > 1


def test_a_long_outage_does_not_overflow():
    """Thousands of attempts still give the maximum, not an OverflowError."""
    assert RetryPolicy(0.25, 5.0).delay(5000) == 5.0


def test_the_documented_policies():
    """The storage reconnects at 0.25 s doubling to 5 s with 10 % jitter; state
    tables load every second, configuration tables every 2 s."""
    assert (RECONNECT.initial, RECONNECT.maximum, RECONNECT.jitter) == (0.25, 5.0, 0.1)
    assert STATE_LOAD.delay(0) == STATE_LOAD.delay(9) == 1.0
    assert CONFIG_LOAD.delay(0) == CONFIG_LOAD.delay(9) == 2.0


class Flaky:
    """A load that fails *failures* times, then returns "rows"."""

    def __init__(self, failures):
        self.failures = failures
        self.calls = 0

    def __call__(self):
        self.calls += 1
        if self.calls <= self.failures:
            return defer.fail(RuntimeError("down %d" % self.calls))
        return defer.succeed("rows")


def test_load_is_retried_after_the_policy_delay_until_it_works():
    """Each failure reports the delay; the next attempt runs after it; the
    result goes to on_loaded."""
    clock, load, errors, loaded = task.Clock(), Flaky(2), [], []
    retry = LoadRetry(clock, RetryPolicy(1.0, 4.0), load,
                      lambda f, delay: errors.append((f.getErrorMessage(), delay)) or delay,
                      on_loaded=loaded.append).start()
    assert load.calls == 1 and errors == [("down 1", 1.0)] and retry.active()
    clock.advance(1.0)
    assert load.calls == 2 and errors[-1] == ("down 2", 2.0)
    clock.advance(2.0)
    assert load.calls == 3 and loaded == ["rows"] and not retry.active()


def test_attempts_are_bounded():
    """With attempts=3 the third failure reports delay None and nothing more runs."""
    clock, load, delays = task.Clock(), Flaky(10), []
    retry = LoadRetry(clock, RetryPolicy(1.0), load,
                      lambda f, delay: delays.append(delay) or delay, attempts=3)
    retry.start()
    assert not retry.last_attempt
    clock.advance(1.0)
    clock.advance(1.0)
    assert retry.last_attempt
    clock.advance(10.0)
    assert load.calls == 3 and delays == [1.0, 1.0, None] and not retry.active()


def test_on_error_may_stop_or_choose_the_pause():
    """on_error returning None stops; returning a number waits that long."""
    clock, load = task.Clock(), Flaky(10)
    pauses = iter([0.2, None])
    retry = LoadRetry(clock, RetryPolicy(5.0), load, lambda f, delay: next(pauses)).start()
    clock.advance(0.2)
    assert load.calls == 2 and not retry.active()
    clock.advance(60)
    assert load.calls == 2


def test_cancel_drops_the_pending_attempt():
    """cancel() (a service stopping) means no further attempt."""
    clock, load = task.Clock(), Flaky(10)
    retry = LoadRetry(clock, RetryPolicy(1.0), load, lambda f, delay: delay).start()
    retry.cancel()
    clock.advance(5)
    assert load.calls == 1 and not retry.active()

