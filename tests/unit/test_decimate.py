import random

import pytest

from memprofile.model.decimate import minmax_indices


@pytest.mark.parametrize("n, limit", [(0, 10), (5, 10), (10, 10), (11, 10), (1000, 40), (100_001, 1000)])
def test_bounded_ordered_and_keeps_the_peak(n, limit):
    rng = random.Random(n)
    values = [rng.randrange(1000) for _ in range(n)]
    if n:
        values[rng.randrange(n)] = 10_000  # one spike
    keep = minmax_indices(values, limit)
    assert len(keep) <= max(limit, n if n <= limit else limit)
    assert keep == sorted(set(keep))
    if n:
        assert max(values[i] for i in keep) == max(values)
        assert keep[0] == 0 and keep[-1] == n - 1


def test_keeps_every_bucket_extreme():
    values = [0] * 1000
    for i in range(50, 1000, 100):
        values[i] = 7  # ten spikes, one per 100 points
    kept = [values[i] for i in minmax_indices(values, 40)]
    assert kept.count(7) == 10
