import pytest

from wrpo.training.schedules import alpha_at


def test_linear_ramps_from_zero_to_alpha_max_and_stays_there():
    assert [alpha_at(t, 4, 0.2) for t in range(6)] == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2, 0.2])


def test_constant_is_alpha_max_from_the_first_step():
    assert [alpha_at(t, 10, 0.3, "constant") for t in (0, 5, 10)] == [0.3, 0.3, 0.3]


def test_a_run_without_known_length_uses_alpha_max():
    assert alpha_at(0, 0, 0.1) == 0.1


def test_unknown_schedule_is_rejected():
    with pytest.raises(ValueError, match="linear, constant"):
        alpha_at(1, 10, 0.1, "cosine")
