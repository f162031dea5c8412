import numpy as np
import pytest

from dualmem.core.stats import paired_gap, summarize
from dualmem.metrics import (
    average_accuracy_curve,
    backward_transfer,
    final_average_accuracy,
    forgetting,
    retention,
)

# After task 0: task 0 at 0.9. After task 1: task 0 dropped to 0.45, task 1 at 0.8.
# After task 2: task 0 at 0.3, task 1 at 0.4, task 2 at 1.0.
R = np.array([
    [0.9, 0.0, 0.0],
    [0.45, 0.8, 0.0],
    [0.3, 0.4, 1.0],
])


def test_final_average_accuracy_is_mean_of_last_row():
    assert final_average_accuracy(R) == pytest.approx((0.3 + 0.4 + 1.0) / 3)


def test_retention_is_ratio_to_just_learned_accuracy():
    assert retention(R) == pytest.approx((0.3 / 0.9 + 0.4 / 0.8) / 2)


def test_backward_transfer():
    assert backward_transfer(R) == pytest.approx(((0.3 - 0.9) + (0.4 - 0.8)) / 2)


def test_forgetting_uses_best_earlier_accuracy():
    R2 = R.copy()
    R2[1, 0] = 0.95  # task 0 improved after task 1, then dropped
    assert forgetting(R2) == pytest.approx(((0.95 - 0.3) + (0.8 - 0.4)) / 2)


def test_perfect_memory_and_total_forgetting():
    perfect = np.tril(np.ones((5, 5)))
    assert retention(perfect) == 1.0 and forgetting(perfect) == 0.0
    forgetful = np.eye(5)
    assert retention(forgetful) == 0.0 and forgetting(forgetful) == 1.0
    assert final_average_accuracy(forgetful) == pytest.approx(0.2)


def test_average_accuracy_curve():
    assert average_accuracy_curve(R) == pytest.approx([0.9, (0.45 + 0.8) / 2, (0.3 + 0.4 + 1.0) / 3])


def test_bad_matrix_rejected():
    with pytest.raises(ValueError):
        retention(np.zeros((2, 3)))


def test_summary_matches_t_interval():
    from scipy import stats

    x = [0.1, 0.4, 0.35, 0.8, 0.5]
    s = summarize(x)
    low, high = stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=stats.sem(x))
    assert s.mean == pytest.approx(np.mean(x))
    assert s.mean - s.ci95 == pytest.approx(low) and s.mean + s.ci95 == pytest.approx(high)
    assert s.sem == pytest.approx(stats.sem(x))


def test_paired_gap_removes_shared_seed_effect():
    a = [0.9, 0.5, 0.7]
    b = [0.8, 0.4, 0.6]
    gap = paired_gap(a, b)
    assert gap.mean == pytest.approx(0.1)
    assert gap.std == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        paired_gap([1.0], [1.0, 2.0])
