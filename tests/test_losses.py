"""Losses over (pos, neg) scores against hand-computed values; every registered loss has a test."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from mmea.errors import MmeaInputError  # noqa: E402
from mmea.losses import (  # noqa: E402
    LOSSES,
    info_nce_loss,
    make_loss,
    margin_ranking_loss,
    self_adversarial_loss,
    self_adversarial_weights,
    softplus_loss,
)

POS = [1.0, -0.5]
NEG = [[0.5, 2.0, -1.0], [0.0, -3.0, 1.0]]


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def scores(requires_grad: bool = False):
    pos = torch.tensor(POS, dtype=torch.float64, requires_grad=requires_grad)
    neg = torch.tensor(NEG, dtype=torch.float64, requires_grad=requires_grad)
    return pos, neg


class LossTestCase:
    """Generic checks: a scalar, finite, differentiable loss; masks honoured; shape errors."""

    name: str = ""
    kwargs: dict = {}

    def make(self):
        return make_loss(self.name, **self.kwargs)

    def test_scalar_and_differentiable(self):
        pos, neg = scores(True)
        loss = self.make()(pos, neg)
        assert loss.dim() == 0 and torch.isfinite(loss)
        loss.backward()
        assert pos.grad is not None and neg.grad is not None

    def test_full_mask_equals_no_mask(self):
        pos, neg = scores()
        fn = self.make()
        assert fn(pos, neg, torch.ones(2, 3, dtype=torch.bool)).item() == pytest.approx(fn(pos, neg).item())

    def test_masked_negative_is_ignored(self):
        pos, neg = scores()
        fn = self.make()
        mask = torch.tensor([[True, False, True], [True, True, True]])
        neg2 = neg.clone()
        neg2[0, 1] = 1e3  # a masked negative can be anything
        assert fn(pos, neg2, mask).item() == pytest.approx(fn(pos, neg, mask).item())

    def test_shape_errors(self):
        with pytest.raises(MmeaInputError, match="pos"):
            self.make()(torch.zeros(2, 1), torch.zeros(2, 3))

    def test_lower_when_positives_score_higher(self):
        pos, neg = scores()
        fn = self.make()
        assert fn(pos + 5, neg).item() < fn(pos, neg).item()


class TestMarginRanking(LossTestCase):
    name = "margin-ranking"
    kwargs = {"margin": 1.0}

    def test_hand_computed(self):
        pos, neg = scores()
        terms = [max(0.0, 1.0 - p + n) for p, row in zip(POS, NEG) for n in row]
        assert margin_ranking_loss(pos, neg, 1.0).item() == pytest.approx(sum(terms) / 6)


class TestSoftplus(LossTestCase):
    name = "softplus"

    def test_hand_computed(self):
        pos, neg = scores()
        ref = sum(softplus(-p) + sum(softplus(n) for n in row) / 3 for p, row in zip(POS, NEG)) / 2
        assert softplus_loss(pos, neg).item() == pytest.approx(ref)

    def test_logistic_alias(self):
        assert LOSSES.get("logistic") is LOSSES.get("softplus")


class TestSelfAdversarial(LossTestCase):
    name = "self-adversarial"
    kwargs = {"margin": 2.0, "adversarial_temperature": 0.5}

    def test_weights_hand_computed(self):
        _, neg = scores()
        p = self_adversarial_weights(neg, temperature=0.5)
        for b, row in enumerate(NEG):
            z = sum(math.exp(0.5 * n) for n in row)
            assert p[b].tolist() == pytest.approx([math.exp(0.5 * n) / z for n in row])

    def test_weights_masked(self):
        _, neg = scores()
        p = self_adversarial_weights(neg, 1.0, torch.tensor([[True, False, True], [False, False, False]]))
        z = math.exp(0.5) + math.exp(-1.0)
        assert p[0].tolist() == pytest.approx([math.exp(0.5) / z, 0.0, math.exp(-1.0) / z])
        assert p[1].tolist() == [0.0, 0.0, 0.0]

    def test_loss_hand_computed(self):
        pos, neg = scores()
        g, a = 2.0, 0.5
        total = 0.0
        for p, row in zip(POS, NEG):
            z = sum(math.exp(a * n) for n in row)
            total += -math.log(sig(g + p)) - sum(math.exp(a * n) / z * math.log(sig(-g - n)) for n in row)
        assert self_adversarial_loss(pos, neg, g, a).item() == pytest.approx(total / 2)

    def test_no_gradient_through_the_weights(self):
        pos, neg = scores(True)
        g, a = 2.0, 0.5
        self_adversarial_loss(pos, neg, g, a).backward()
        # d/dn_j of -p_j log sigma(-g - n_j) with p constant = p_j * sigma(g + n_j), divided by B = 2
        for b, row in enumerate(NEG):
            z = sum(math.exp(a * n) for n in row)
            want = [math.exp(a * n) / z * sig(g + n) / 2 for n in row]
            assert neg.grad[b].tolist() == pytest.approx(want)


class TestInfoNce(LossTestCase):
    name = "info-nce"
    kwargs = {"temperature": 0.5}

    def test_hand_computed(self):
        pos, neg = scores()
        tau = 0.5
        ref = 0.0
        for p, row in zip(POS, NEG):
            ref += -math.log(math.exp(p / tau) / (math.exp(p / tau) + sum(math.exp(n / tau) for n in row)))
        assert info_nce_loss(pos, neg, tau).item() == pytest.approx(ref / 2)

    def test_learnable_temperature_gets_a_gradient(self):
        fn = make_loss("info-nce", temperature=0.5, learnable_temperature=True)
        (param,) = fn.parameters()
        assert fn.describe()["temperature"] == pytest.approx(0.5)
        pos, neg = scores()
        fn(pos.float(), neg.float()).backward()
        assert param.grad is not None and param.grad.abs().item() > 0

    def test_bad_temperature(self):
        with pytest.raises(MmeaInputError, match="temperature"):
            make_loss("info-nce", temperature=0.0)


def test_make_loss_drops_unrelated_options():
    fn = make_loss("softplus", margin=3.0, temperature=0.1)
    assert fn.registry_name == "softplus"
    assert make_loss("margin-ranking", margin=3.0).margin == 3.0


def test_every_registered_loss_has_a_test_case():
    tested = {c.name for c in LossTestCase.__subclasses__()}
    assert set(LOSSES.names()) <= tested, f"losses without a test case: {set(LOSSES.names()) - tested}"


def test_unknown_loss_lists_choices():
    with pytest.raises(MmeaInputError, match="margin-ranking"):
        make_loss("hinge-squared")
