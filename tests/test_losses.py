"""The WRPO objectives against plain references written out by hand, values and gradients."""

import math

import pytest
import torch
import torch.nn.functional as F

from wrpo.losses import (
    LOSSES,
    SOURCE_WEIGHTINGS,
    LossSettings,
    PreferenceLogps,
    ResponseLogps,
    source_weights_from_scores,
    wrpo_loss,
)


def plain_dpo(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    """Standard DPO, -log sigmoid(beta * (chosen log-ratio - rejected log-ratio))."""
    return -F.logsigmoid(beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)))


def random_logps(batch=6, seed=0, requires_grad=False):
    generator = torch.Generator().manual_seed(seed)
    values = [-(torch.rand(batch, generator=generator, dtype=torch.float64) * 30 + 1) for _ in range(6)]
    return [v.requires_grad_(requires_grad) for v in values]


def test_hand_computed_value():
    # policy: source -10, target -12, rejected -15; reference: -11, -12.5, -14
    beta, alpha = 0.1, 0.3
    z = alpha * beta * (-10 + 11) + (1 - alpha) * beta * (-12 + 12.5) - beta * (-15 + 14)
    assert z == pytest.approx(0.03 + 0.035 + 0.1)
    expected = math.log(1 + math.exp(-z))
    loss = wrpo_loss(*(torch.tensor([v], dtype=torch.float64) for v in (-10, -12, -15, -11, -12.5, -14)),
                     alpha=alpha, beta=beta)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_label_smoothing_value():
    logps = [torch.tensor([v], dtype=torch.float64) for v in (-10, -12, -15, -11, -12.5, -14)]
    z = 0.3 * 0.1 * 1 + 0.7 * 0.1 * 0.5 + 0.1 * 1
    eps = 0.2
    expected = (1 - eps) * math.log(1 + math.exp(-z)) + eps * math.log(1 + math.exp(z))
    assert wrpo_loss(*logps, alpha=0.3, beta=0.1, label_smoothing=eps).item() == pytest.approx(expected, rel=1e-12)


def test_alpha_zero_is_dpo_on_target_and_alpha_one_is_dpo_on_source():
    ps, pt, pr, rs, rt, rr = random_logps()
    torch.testing.assert_close(wrpo_loss(ps, pt, pr, rs, rt, rr, alpha=0.0, beta=0.5), plain_dpo(pt, pr, rt, rr, 0.5))
    torch.testing.assert_close(wrpo_loss(ps, pt, pr, rs, rt, rr, alpha=1.0, beta=0.5), plain_dpo(ps, pr, rs, rr, 0.5))


def test_gradients_reach_only_the_policy_terms_with_the_analytic_weights():
    ps, pt, pr, rs, rt, rr = random_logps(requires_grad=True)
    alpha, beta = 0.25, 0.1
    wrpo_loss(ps, pt, pr, rs.detach(), rt.detach(), rr.detach(), alpha=alpha, beta=beta).sum().backward()
    with torch.no_grad():
        z = alpha * beta * (ps - rs) + (1 - alpha) * beta * (pt - rt) - beta * (pr - rr)
        push = torch.sigmoid(-z)
    # d(-log sigmoid z)/d logp: source -alpha*beta*sigmoid(-z), target -(1-alpha)*beta*..., rejected +beta*...
    torch.testing.assert_close(ps.grad, -alpha * beta * push)
    torch.testing.assert_close(pt.grad, -(1 - alpha) * beta * push)
    torch.testing.assert_close(pr.grad, beta * push)
    assert rs.grad is None and rt.grad is None and rr.grad is None


def plain_simpo(ps, pt, pr, ls, lt, lr, alpha, beta, gamma):
    z = alpha * beta * ps / ls + (1 - alpha) * beta * pt / lt - beta * pr / lr - gamma
    return -F.logsigmoid(z)


def plain_ipo(ps, pt, pr, rs, rt, rr, ls, lt, lr, alpha, beta):
    z = alpha * (ps - rs) / ls + (1 - alpha) * (pt - rt) / lt - (pr - rr) / lr
    return (z - 1 / (2 * beta)) ** 2


def lengths(batch=6, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(1, 40, (batch,), generator=generator).double() for _ in range(3)]


def plain_ln_dpo(ps, pt, pr, rs, rt, rr, ls, lt, lr, alpha, beta, eps):
    """FuseChat-3.0's length-normalised DPO with WRPO's fused chosen reward, written out."""
    z = beta * (alpha * (ps - rs) / ls + (1 - alpha) * (pt - rt) / lt - (pr - rr) / lr)
    return -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)


@pytest.mark.parametrize("alpha", [0.0, 0.4, 1.0])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_length_normalised_dpo_form_matches_plain_reference_values_and_gradients(alpha, label_smoothing):
    ps, pt, pr, rs, rt, rr = random_logps(requires_grad=True)
    ls, lt, lr = lengths()
    batch = PreferenceLogps(policy=ResponseLogps(ps, pt, pr), reference=ResponseLogps(rs, rt, rr),
                            lengths=ResponseLogps(ls, lt, lr))
    ours = LOSSES["ln_dpo"](batch, LossSettings(alpha=alpha, beta=10.0, label_smoothing=label_smoothing)).losses
    reference_inputs = [t.detach().clone().requires_grad_() for t in (ps, pt, pr, rs, rt, rr)]
    reference = plain_ln_dpo(*reference_inputs, ls, lt, lr, alpha, 10.0, label_smoothing)
    torch.testing.assert_close(ours, reference)
    ours.sum().backward()
    reference.sum().backward()
    for mine, theirs in zip((ps, pt, pr), reference_inputs[:3], strict=True):
        torch.testing.assert_close(mine.grad, theirs.grad)


def test_length_normalised_dpo_on_equal_lengths_is_dpo_with_beta_over_the_length():
    logps = random_logps()
    same = torch.full((6,), 8.0, dtype=torch.float64)
    batch = PreferenceLogps(policy=ResponseLogps(*logps[:3]), reference=ResponseLogps(*logps[3:]),
                            lengths=ResponseLogps(same, same, same))
    torch.testing.assert_close(LOSSES["ln_dpo"](batch, LossSettings(alpha=0.3, beta=8.0)).losses,
                               wrpo_loss(*logps, alpha=0.3, beta=1.0))


@pytest.mark.parametrize("alpha", [0.0, 0.4, 1.0])
def test_simpo_form_matches_plain_reference_values_and_gradients(alpha):
    ps, pt, pr, _, _, _ = random_logps(requires_grad=True)
    ls, lt, lr = lengths()
    batch = PreferenceLogps(policy=ResponseLogps(ps, pt, pr), lengths=ResponseLogps(ls, lt, lr))
    ours = LOSSES["simpo"](batch, LossSettings(alpha=alpha, beta=2.0, gamma=0.5)).losses
    reference_inputs = [t.detach().clone().requires_grad_() for t in (ps, pt, pr)]
    reference = plain_simpo(*reference_inputs, ls, lt, lr, alpha, 2.0, 0.5)
    torch.testing.assert_close(ours, reference)
    ours.sum().backward()
    reference.sum().backward()
    for mine, theirs in zip((ps, pt, pr), reference_inputs, strict=True):
        torch.testing.assert_close(mine.grad, theirs.grad)


@pytest.mark.parametrize("alpha", [0.0, 0.4, 1.0])
def test_ipo_form_matches_plain_reference_values_and_gradients(alpha):
    ps, pt, pr, rs, rt, rr = random_logps(requires_grad=True)
    ls, lt, lr = lengths()
    batch = PreferenceLogps(policy=ResponseLogps(ps, pt, pr), reference=ResponseLogps(rs, rt, rr),
                            lengths=ResponseLogps(ls, lt, lr))
    ours = LOSSES["ipo"](batch, LossSettings(alpha=alpha, beta=0.1)).losses
    reference_inputs = [t.detach().clone().requires_grad_() for t in (ps, pt, pr, rs, rt, rr)]
    reference = plain_ipo(*reference_inputs, ls, lt, lr, alpha, 0.1)
    torch.testing.assert_close(ours, reference)
    ours.sum().backward()
    reference.sum().backward()
    for mine, theirs in zip((ps, pt, pr), reference_inputs[:3], strict=True):  # policy gradients only
        torch.testing.assert_close(mine.grad, theirs.grad)


def test_dpo_form_rewards_and_margins():
    ps, pt, pr, rs, rt, rr = random_logps()
    batch = PreferenceLogps(policy=ResponseLogps(ps, pt, pr), reference=ResponseLogps(rs, rt, rr))
    output = LOSSES["dpo"](batch, LossSettings(alpha=0.3, beta=0.1))
    torch.testing.assert_close(output.source_rewards, 0.1 * (ps - rs))
    torch.testing.assert_close(output.target_rewards, 0.1 * (pt - rt))
    torch.testing.assert_close(output.chosen_rewards, 0.3 * 0.1 * (ps - rs) + 0.7 * 0.1 * (pt - rt))
    torch.testing.assert_close(output.margins, output.chosen_rewards - 0.1 * (pr - rr))
    torch.testing.assert_close(output.losses, -F.logsigmoid(output.margins))


def test_several_sources_uniform_mean_equals_mean_reward():
    ps, pt, pr, rs, rt, rr = random_logps(batch=4)
    extra_policy, extra_ref = ps - 3.0, rs - 1.0
    source_policy = torch.stack([ps, extra_policy], dim=1)   # [B, 2]
    source_ref = torch.stack([rs, extra_ref], dim=1)
    weights = source_weights_from_scores(torch.zeros(4, 2), torch.ones(4, 2), "uniform")
    batch = PreferenceLogps(policy=ResponseLogps(source_policy, pt, pr), reference=ResponseLogps(source_ref, rt, rr),
                            source_weights=weights)
    output = LOSSES["dpo"](batch, LossSettings(alpha=0.5, beta=0.1))
    torch.testing.assert_close(output.source_rewards, 0.1 * ((ps - rs) + (extra_policy - extra_ref)) / 2)


def test_score_weights_are_a_softmax_over_present_responses_and_absent_ones_do_not_count():
    scores = torch.tensor([[2.0, 1.0, 7.0], [0.5, -1.0, 0.0]])
    present = torch.tensor([[True, True, False], [True, True, True]])
    weights = source_weights_from_scores(scores, present, "score")
    expected_first = torch.softmax(torch.tensor([2.0, 1.0]), dim=0)
    torch.testing.assert_close(weights[0, :2], expected_first)
    assert weights[0, 2] == 0
    torch.testing.assert_close(weights[1], torch.softmax(scores[1], dim=0))
    uniform = source_weights_from_scores(scores, present, "uniform")
    torch.testing.assert_close(uniform, torch.tensor([[0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]]))
    assert set(SOURCE_WEIGHTINGS) == {"uniform", "score"}  # WRPOConfig refuses any other name

    # A value in an absent slot changes nothing.
    ps, pt, pr, rs, rt, rr = random_logps(batch=2)
    def loss_with(absent_value):
        policy = torch.stack([ps, pt, torch.full_like(ps, absent_value)], dim=1)
        ref = torch.stack([rs, rt, torch.zeros_like(rs)], dim=1)
        batch = PreferenceLogps(policy=ResponseLogps(policy, pt, pr), reference=ResponseLogps(ref, rt, rr),
                                source_weights=weights.double())
        return LOSSES["dpo"](batch, LossSettings(alpha=0.7, beta=0.1)).losses
    torch.testing.assert_close(loss_with(0.0)[0], loss_with(-500.0)[0])


def test_forms_needing_missing_inputs_say_so():
    ps, pt, pr, _, _, _ = random_logps()
    with pytest.raises(ValueError, match="dpo loss needs reference"):
        LOSSES["dpo"](PreferenceLogps(policy=ResponseLogps(ps, pt, pr)), LossSettings(alpha=0.1, beta=0.1))
    with pytest.raises(ValueError, match="simpo loss needs response lengths"):
        LOSSES["simpo"](PreferenceLogps(policy=ResponseLogps(ps, pt, pr)), LossSettings(alpha=0.1, beta=0.1))
