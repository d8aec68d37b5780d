"""Options of retries and timeouts are checked when they are given: a clear error, at once."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest

import durapipe as dp
from durapipe._policy import RetryPolicy
from durapipe.cli.run import _timeout
from durapipe.errors import ConfigError, InvalidInput


def _fn() -> None: ...


async def _pipe() -> None: ...


@pytest.mark.parametrize(
    ("kw", "says"),
    [
        ({"retries": -1}, "retries must be 0 or more"),
        ({"retries": 1.5}, "retries must be 0 or more"),
        ({"retry_delay": -1}, "retry_delay must be a finite number"),
        ({"retry_delay": math.nan}, "retry_delay must be a finite number"),
        ({"backoff": 0.5}, "backoff must be a finite number, 1 or more"),
        ({"max_delay": math.inf}, "max_delay must be a finite number"),
        ({"jitter": "yes"}, "jitter must be True or False"),
        ({"non_retryable": (ValueError, 42)}, "non_retryable takes exception classes"),
        ({"non_retryable": "ValueError"}, "non_retryable takes exception classes"),
        ({"timeout": -1}, "timeout must be a finite number of seconds above 0"),
        ({"timeout": 0}, "timeout must be a finite number of seconds above 0"),
        ({"timeout": math.nan}, "timeout must be a finite number of seconds above 0"),
        ({"timeout": math.inf}, "timeout must be a finite number of seconds above 0"),
        ({"timeout": "5s"}, "timeout must be seconds"),
    ],
)
def test_bad_step_options_raise_at_decoration(kw: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError, match=says) as err:
        dp.step(**kw)(_fn)
    assert "\n" not in str(err.value) and str(err.value).startswith("@dp.step: ")


@pytest.mark.parametrize(
    ("kw", "says"),
    [
        ({"timeout": -5}, "timeout must be a finite number of seconds above 0"),
        ({"timeout": math.inf}, "timeout must be a finite number of seconds above 0"),
        ({"max_recoveries": -1}, "max_recoveries must be 0 or more"),
        ({"max_recoveries": True}, "max_recoveries must be 0 or more"),
    ],
)
def test_bad_pipeline_options_raise_at_decoration(kw: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        dp.pipeline(**kw)(_pipe)


def test_good_options_are_kept() -> None:
    p = dp.pipeline(name="retry_opts_ok", timeout=timedelta(hours=2), max_recoveries=0)(_pipe)
    assert p.timeout == 7200 and p.max_recoveries == 0
    s = dp.step(retries=None, non_retryable=KeyError, timeout=timedelta(seconds=3))(_fn)
    opts = s.__durapipe_step_options__  # type: ignore[attr-defined]
    assert opts.retries is None and opts.non_retryable == (KeyError,) and opts.timeout == 3
    assert opts.policy.may_retry(10**6) and not opts.policy.may_retry(1, KeyError("x"))


def test_delays_grow_are_capped_and_jitter_stays_within_half() -> None:
    plain = RetryPolicy(retries=None, retry_delay=1, backoff=2, max_delay=5, jitter=False)
    assert [plain.delay(n) for n in (1, 2, 3, 4, 5000)] == [1, 2, 4, 5, 5]
    jittered = RetryPolicy(retries=3, retry_delay=4, backoff=1, max_delay=60, jitter=True)
    draws = {jittered.delay(1) for _ in range(200)}
    assert min(draws) >= 2 and max(draws) <= 4 and len(draws) > 1


@pytest.mark.parametrize("good", [("90s", 90), ("2h", 7200), ("1h30m", 5400), ("1.5", 1.5)])
def test_cli_timeout_durations(good: tuple[str, float]) -> None:
    assert _timeout(good[0]) == good[1]


@pytest.mark.parametrize("bad", ["2x", "-5s", "0", "0s", "nan", "inf", "1h-", "", "h"])
def test_cli_timeout_refuses_malformed_durations(bad: str) -> None:
    with pytest.raises(InvalidInput, match=r"^--timeout .*e\.g\. 90s, 30m, 2h, 1h30m$"):
        _timeout(bad)
