"""A job's peak memory is its own: a peak reached before the mark does not show in the next job's figure."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from harness.data.memory import mark_peak, peak_rss_mb, rss_mb


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the resettable peak is Linux's VmHWM")
def test_peak_since_mark_sees_an_allocation_and_forgets_it_after_the_next_mark():
    assert mark_peak() == "since_mark"
    before = rss_mb()
    block = np.ones(300 * 2**20 // 8)  # 300 MiB, every page touched
    assert peak_rss_mb() >= before + 280
    del block
    assert mark_peak() == "since_mark"
    assert peak_rss_mb() < before + 100  # the earlier 300 MiB peak belongs to the earlier mark
