"""Negative samplers: generic checks for every registered sampler, plus each one's own rule."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from mmea.errors import MmeaInputError
from mmea.sampling import (
    SAMPLERS,
    FalseNegativeControl,
    RelationCardinality,
    TripleSet,
    TypeConstraints,
    make_sampler,
    nearest_neighbour_table,
    sample_link_negatives,
)

E, R = 12, 3


def tiny_triples() -> np.ndarray:
    """12 entities, 3 relations: r0 is 1-N (0 -> 1..4, 5 -> 6..8), r1 is N-1 (many -> 9), r2 a ring (1-1)."""
    t = [(0, 0, x) for x in (1, 2, 3, 4)] + [(5, 0, x) for x in (6, 7, 8)]
    t += [(x, 1, 9) for x in (1, 2, 3, 6)] + [(7, 1, 10)]
    t += [(i, 2, (i + 1) % E) for i in range(E)]
    return np.array(t, dtype=np.int64)


def dense_triples() -> np.ndarray:
    """A graph where most corruptions of r0 are true: 0 -r0-> 1..10 (filtering must work hard)."""
    t = [(0, 0, x) for x in range(1, 11)] + [(x, 1, 11) for x in range(0, 10)] + [(i, 2, (i + 1) % E) for i in range(E)]
    return np.array(t, dtype=np.int64)


def embedding_fn():
    rng = np.random.default_rng(3)
    return rng.normal(size=(E, 4)).astype(np.float32)


def score_fn(triples: np.ndarray) -> np.ndarray:
    """A fixed plausibility: prefers small |h + r - t| (deterministic, cheap)."""
    t = np.asarray(triples)
    return -np.abs(t[:, 0] + t[:, 1] - t[:, 2]).astype(np.float64)


def assert_unresolved_are_impossible(s, batch, out, types=None):
    """Slots reported invalid must have had no allowed candidate at all (the sampler's own set, types, filter)."""
    known = TripleSet(s.triples, E, R)
    for b, k in zip(*np.nonzero(~out.valid)):
        side = bool(out.sides[b, k])
        own = s._allowed_candidates(batch[b], side)
        cands = np.arange(E) if own is None else np.asarray(own)
        if types is not None:
            cands = cands[(types.domain if side else types.range)[batch[b, 1], cands]]
        trial = np.repeat(batch[b:b + 1], len(cands), axis=0)
        trial[:, 0 if side else 2] = cands
        assert known.contains(trial).all(), (batch[b], side)
    assert s.stats.unresolved >= int((~out.valid).sum())


class SamplerTestCase:
    """Generic checks; a subclass sets ``name`` and ``kwargs`` and inherits them all."""

    name: str = ""
    kwargs: dict = {}

    def make(self, triples=None, **control):
        triples = tiny_triples() if triples is None else triples
        s = make_sampler(self.name, triples, E, R, control=FalseNegativeControl(**control), seed=0, **self.kwargs)
        if s.needs_model:
            s.bind(score_fn=score_fn, embedding_fn=embedding_fn)
            s.on_epoch_start(0)
        return s

    def test_registered_name(self):
        assert self.name in SAMPLERS

    def test_shapes_and_untouched_slots(self):
        s = self.make()
        batch = tiny_triples()
        out = s.sample_with_info(batch, 5)
        assert out.negatives.shape == (len(batch), 5, 3)
        assert out.negatives.dtype == np.int64
        assert out.sides.shape == out.valid.shape == (len(batch), 5)
        assert (out.negatives[..., 1] == batch[:, None, 1]).all()
        head = out.sides
        assert (out.negatives[..., 2][head] == np.broadcast_to(batch[:, None, 2], head.shape)[head]).all()
        assert (out.negatives[..., 0][~head] == np.broadcast_to(batch[:, None, 0], head.shape)[~head]).all()
        assert ((out.negatives[..., [0, 2]] >= 0) & (out.negatives[..., [0, 2]] < E)).all()
        assert s.sample(batch, 2).shape == (len(batch), 2, 3)

    def test_filtered_never_returns_a_known_triple(self):
        triples = dense_triples()
        s = self.make(triples)
        known = TripleSet(triples, E, R)
        for _ in range(5):
            out = s.sample_with_info(triples, 8)
            assert not known.contains(out.negatives[out.valid]).any()
            assert_unresolved_are_impossible(s, triples, out)
        assert s.stats.true_returned == 0
        assert s.stats.drawn == 5 * len(triples) * 8

    def test_type_constraints_respected(self):
        triples = tiny_triples()
        s = self.make(type_constraints=True)
        types = TypeConstraints.from_triples(triples, E, R)
        out = s.sample_with_info(triples, 6)
        repl = out.replacements
        ok = types.allows(triples[:, 1:2], repl, out.sides)
        assert ok[out.valid].all()
        assert_unresolved_are_impossible(s, triples, out, types)

    def test_cardinality_aware_sides(self):
        triples = tiny_triples()
        s = self.make(cardinality_aware=True)
        cat = RelationCardinality.from_triples(triples, R).category()
        assert (cat == ["1-N", "N-1", "1-1"]).all()
        sides = s.sample_with_info(triples, 6).sides
        assert sides[triples[:, 1] == 0].all()  # 1-N: replace the head
        assert not sides[triples[:, 1] == 1].any()  # N-1: replace the tail

    def test_wrong_batch_shape_is_an_input_error(self):
        with pytest.raises(MmeaInputError, match="shape"):
            self.make().sample(np.zeros((4, 2), dtype=np.int64), 3)


class TestUniform(SamplerTestCase):
    name = "uniform"

    def test_unfiltered_counts_false_negatives(self):
        triples = dense_triples()
        s = self.make(triples, filtered=False)
        out = s.sample_with_info(triples, 50)
        known = TripleSet(triples, E, R)
        n_true = int(known.contains(out.negatives).sum())
        assert n_true > 0
        assert s.stats.true_drawn == s.stats.true_returned == n_true
        assert s.stats.false_negative_rate == pytest.approx(n_true / out.negatives[..., 0].size)

    def test_shared_masks_known_triples(self):
        triples = dense_triples()
        s = self.make(triples)
        sh = s.sample_shared(triples, 7)
        assert sh.head_candidates.shape == (7,) and sh.valid.shape == (len(triples), 7)
        negs = sh.as_triples(triples)
        known = TripleSet(triples, E, R).contains(negs)
        assert (known == ~sh.valid).all()  # exactly the known triples are masked
        assert s.stats.masked == int(known.sum())


class TestBernoulli(SamplerTestCase):
    name = "bernoulli"

    def test_probabilities_match_hand_computed_tph_hpt(self):
        s = self.make()
        # r0: 7 triples, 2 heads, 7 tails -> tph 3.5, hpt 1;  r1: 5 triples, 5 heads, 2 tails -> tph 1, hpt 2.5
        # r2: ring, tph = hpt = 1
        assert s.cardinality.tph == pytest.approx([3.5, 1.0, 1.0])
        assert s.cardinality.hpt == pytest.approx([1.0, 2.5, 1.0])
        assert s.head_probability(np.array([0, 1, 2])) == pytest.approx([3.5 / 4.5, 1 / 3.5, 0.5])

    def test_empirical_head_rate(self):
        s = self.make(filtered=False)
        batch = np.repeat(tiny_triples()[:1], 400, axis=0)  # relation 0
        sides = s.sample_with_info(batch, 10).sides
        assert sides.mean() == pytest.approx(3.5 / 4.5, abs=0.03)


class TestInBatch(SamplerTestCase):
    name = "in-batch"

    def test_candidates_come_from_other_positives(self):
        batch = np.array([[0, 0, 1], [5, 0, 6], [3, 2, 4], [7, 1, 10]])
        s = self.make(filtered=False)
        out = s.sample_with_info(batch, 20)
        for b in range(len(batch)):
            others_h = set(np.delete(batch[:, 0], b)) | {batch[b, 0]}
            others_t = set(np.delete(batch[:, 2], b))
            h_rep = out.replacements[b][out.sides[b]]
            t_rep = out.replacements[b][~out.sides[b]]
            assert set(h_rep) <= set(np.delete(batch[:, 0], b))
            assert set(t_rep) <= others_t
            assert others_h  # (keeps the loop honest)

    def test_shared_pairs_every_other_row(self):
        batch = np.array([[0, 0, 1], [5, 0, 6], [3, 2, 4], [7, 1, 10]])
        sh = self.make(filtered=False).sample_shared(batch, 99)
        assert (sh.head_candidates == batch[:, 0]).all() and (sh.tail_candidates == batch[:, 2]).all()
        assert not sh.valid.diagonal().any() and sh.valid[~np.eye(4, dtype=bool)].all()


class TestKHop(SamplerTestCase):
    name = "k-hop"
    kwargs = {"k": 2}

    def test_candidates_within_k_hops(self):
        triples = tiny_triples()
        s = self.make(filtered=False)
        out = s.sample_with_info(triples, 30)
        for b in range(len(triples)):
            for k in range(30):
                anchor = triples[b, 0] if out.sides[b, k] else triples[b, 2]
                d = s.hop_distances(int(anchor))[out.replacements[b, k]]
                assert 1 <= d <= 2, (b, k, anchor, out.replacements[b, k])

    def test_hop_distances_against_hand_computed(self):
        s = self.make()
        d = s.hop_distances(0, max_hops=3)
        # 0's neighbours: 1..4 (r0), 11 and 1 (ring); 2 hops: 9 (via 1,2,3), 5 (via 4 ring) and 10 (via 11 ring)
        assert d[0] == 0 and set(np.flatnonzero(d == 1)) == {1, 2, 3, 4, 11}
        assert set(np.flatnonzero(d == 2)) == {5, 9, 10}


class TestHardNn(SamplerTestCase):
    name = "hard-nn"
    kwargs = {"num_neighbors": 3, "refresh_every": 2}

    def test_candidates_are_nearest_neighbours(self):
        s = self.make(filtered=False)
        emb = embedding_fn()
        x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        sim = x @ x.T
        np.fill_diagonal(sim, -np.inf)
        ref = np.argsort(-sim, axis=1)[:, :3]
        assert (np.sort(s.neighbors, 1) == np.sort(ref, 1)).all()
        out = s.sample_with_info(tiny_triples(), 10)
        anchors = np.where(out.sides, tiny_triples()[:, None, 0], tiny_triples()[:, None, 2])
        assert all(out.replacements[i, j] in ref[anchors[i, j]] for i, j in np.ndindex(out.sides.shape))

    def test_refresh_schedule(self):
        s = self.make()
        assert s.refreshes == 1
        s.on_epoch_start(1)
        assert s.refreshes == 1
        s.on_epoch_start(2)
        assert s.refreshes == 2

    def test_unbound_is_an_actionable_error(self):
        s = make_sampler("hard-nn", tiny_triples(), E, R)
        with pytest.raises(MmeaInputError, match="bind"):
            s.sample(tiny_triples(), 2)


def test_nearest_neighbour_table_excludes_self():
    emb = embedding_fn()
    tab = nearest_neighbour_table(emb, 4)
    assert tab.shape == (E, 4)
    assert not (tab == np.arange(E)[:, None]).any()


class TestRankAbove(SamplerTestCase):
    name = "rank-above"
    kwargs = {"pool_size": 12}

    def test_prefers_candidates_scored_above_the_positive(self):
        s = self.make(filtered=False)
        batch = np.array([[0, 2, 9]])  # score -7: most candidates t (|t - 2| < 7) rank above
        out = s.sample_with_info(batch, 4)
        cand = out.negatives.reshape(-1, 3)
        pos = score_fn(batch)[0]
        assert (score_fn(cand) >= pos).all()


class TestCache(SamplerTestCase):
    name = "cache"
    kwargs = {"cache_size": 4, "pool_size": 6, "temperature": 0.01}

    def test_caches_move_to_high_scoring_entities(self):
        triples = tiny_triples()
        s = self.make()
        rows, found = s._rows(triples[:1], side=False)  # tail cache of (0, r0)
        for _ in range(30):
            s.sample(triples, 4)
        cache = s.tail_cache[rows[0]]
        scores = score_fn(np.stack([np.zeros(4, int), np.zeros(4, int), cache], 1))
        known = TripleSet(triples, E, R).contains(np.stack([np.zeros(4, int), np.zeros(4, int), cache], 1))
        assert not known.any()  # filtering keeps true tails out of the cache
        # the best non-true tails of (0, r0, ?) under score -|0 - t|: 0, 5, 6, 7 (1..4 are true)
        assert scores.mean() > -7.0

    def test_draws_from_the_cache(self):
        s = self.make(filtered=False)
        s.update_every = 10**9  # freeze the caches
        batch = tiny_triples()[:1]
        out = s.sample_with_info(batch, 20)
        rows_t, _ = s._rows(batch, False)
        rows_h, _ = s._rows(batch, True)
        tails = out.replacements[0][~out.sides[0]]
        heads = out.replacements[0][out.sides[0]]
        assert set(tails) <= set(s.tail_cache[rows_t[0]]) and set(heads) <= set(s.head_cache[rows_h[0]])


def test_every_registered_sampler_has_a_test_case():
    tested = {c.name for c in SamplerTestCase.__subclasses__()}
    assert set(SAMPLERS.names()) <= tested, f"samplers without a test case: {set(SAMPLERS.names()) - tested}"


def test_triple_set_membership():
    t = tiny_triples()
    ts = TripleSet(t, E, R)
    probe = np.array([[0, 0, 1], [0, 0, 5], [11, 2, 0], [11, 2, 1]])
    assert ts.contains(probe).tolist() == [True, False, True, False]
    assert ts.contains(probe.reshape(2, 2, 3)).shape == (2, 2)
    assert not TripleSet(np.zeros((0, 3)), E, R).contains(probe).any()


def test_type_constraints_from_triples():
    tc = TypeConstraints.from_triples(tiny_triples(), E, R)
    assert set(np.flatnonzero(tc.domain[0])) == {0, 5}
    assert set(np.flatnonzero(tc.range[1])) == {9, 10}


def test_control_is_frozen_and_validated():
    c = FalseNegativeControl()
    with pytest.raises(Exception):
        c.filtered = False  # type: ignore[misc]
    with pytest.raises(MmeaInputError):
        FalseNegativeControl(max_resample=-1)


def test_unknown_sampler_lists_choices():
    with pytest.raises(MmeaInputError, match="uniform"):
        make_sampler("nope", tiny_triples(), E, R)


def test_impossible_slots_are_reported_not_returned():
    # (0, r0, ?) where every entity but the head itself is a known tail, and 0 too: nothing to draw
    t = np.array([(0, 0, x) for x in range(E)], dtype=np.int64)
    s = make_sampler("uniform", t, E, 1, control=FalseNegativeControl(max_resample=2))
    s.corrupt_side = lambda batch, k, rng: np.zeros((len(batch), k), dtype=bool)  # force tails
    out = s.sample_with_info(t[:2], 3)
    assert not out.valid.any() and s.stats.unresolved == 6


# ----------------------------------------------------------------------------- alignment negatives
@pytest.mark.parametrize("rule", ["uniform", "in-batch", "hard-nn"])
@pytest.mark.parametrize("side", ["src", "tgt"])
def test_link_negatives_never_known_links(rule, side):
    rng = np.random.default_rng(0)
    n_src, n_tgt = 9, 7
    links = np.array([[0, 0], [1, 1], [2, 2], [3, 3], [4, 4]])
    known = np.concatenate([links, [[0, 1], [0, 2], [1, 0]]])
    n_side = n_tgt if side == "tgt" else n_src
    emb = rng.normal(size=(n_side, 3))
    out = sample_link_negatives(links, n_src, n_tgt, 6, sampler=rule, side=side, known_links=known,
                                embeddings=emb, num_neighbors=3, rng=1)
    assert out.shape == (5, 6) and ((out >= 0) & (out < n_side)).all()
    pairs = {tuple(x) for x in known}
    for b in range(5):
        for n in out[b]:
            pair = (links[b, 0], n) if side == "tgt" else (n, links[b, 1])
            assert pair not in pairs
    if rule == "in-batch":
        col = 1 if side == "tgt" else 0
        assert set(out.ravel()) <= set(links[:, col])
    if rule == "hard-nn":
        col = 1 if side == "tgt" else 0
        tab = nearest_neighbour_table(emb, 3)
        allowed_fallback = set(range(n_side))
        assert all(n in tab[links[b, col]] or n in allowed_fallback for b in range(5) for n in out[b])


def test_link_negatives_input_errors():
    links = np.array([[0, 0], [1, 1]])
    with pytest.raises(MmeaInputError, match="uniform, in-batch, hard-nn"):
        sample_link_negatives(links, 3, 3, 2, sampler="cache")
    with pytest.raises(MmeaInputError, match="embeddings"):
        sample_link_negatives(links, 3, 3, 2, sampler="hard-nn")


def test_registries_import_without_torch():
    code = ("import sys, mmea.sampling, mmea.losses, mmea.linkpred; "
            "print(sorted(mmea.sampling.SAMPLERS.names()), sorted(mmea.losses.LOSSES.names())); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("replace_head", [True, False])
def test_partner_index_candidate_mask_with_repeated_candidates(replace_head):
    from mmea.sampling import PartnerIndex, _replace

    triples = dense_triples()
    cands = np.array([3, 0, 11, 3, 5, 1, 1, 9])
    got = PartnerIndex(triples, E, R).candidate_mask(triples, replace_head, cands)
    sides = np.full((len(triples), len(cands)), replace_head)
    ref = TripleSet(triples, E, R).contains(_replace(triples, sides, np.broadcast_to(cands, sides.shape)))
    assert (got == ref).all() and ref.any()


def test_in_batch_shared_filtering_is_exact():
    triples = dense_triples()
    s = make_sampler("in-batch", triples, E, R, seed=3)
    sh = s.sample_shared(triples, 5)
    known = TripleSet(triples, E, R).contains(sh.as_triples(triples))
    off_diag = ~np.eye(len(triples), dtype=bool)
    assert (sh.valid == (~known & off_diag)).all()
