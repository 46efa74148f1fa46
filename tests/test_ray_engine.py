"""``--engine ray`` (issue 18 part 3): the sharded top-k merge, the sharded search against the in-process
search on a 2-node local Ray cluster, the partitioned mode, and the errors (no ray, no cluster).

The Ray tests share one module-scoped 2-node cluster (``ray.cluster_utils.Cluster``, one CPU and 100 MB of
object store per node, no dashboard); they are skipped, with the reason, when Ray cannot start here.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from mmea.cli import main
from mmea.config import EngineConfig, SearchConfig
from mmea.engine.ray_engine import RaySession, check_reachable, import_ray
from mmea.engine.run import engine_for
from mmea.engine.shards import IndexShard, merge_topk, shard_bounds
from mmea.errors import MmeaError, MmeaInputError

os.environ.setdefault("RAY_DISABLE_IMPORT_WARNING", "1")


# -- no cluster needed ------------------------------------------------------------------------------------

def _dense_topk(Q, T, k):
    S = Q @ T.T
    o = np.lexsort((np.broadcast_to(np.arange(S.shape[1]), S.shape), -S.astype(np.float64)), axis=1)[:, :k]
    return np.take_along_axis(S, o, 1), o


@pytest.mark.parametrize("shards", [1, 3, 7])
def test_merged_shard_topk_equals_numpy_with_ties(shards):
    rng = np.random.default_rng(0)
    T = rng.integers(-2, 3, (300, 8)).astype(np.float32)  # integer vectors: many exactly tied scores
    Q = rng.integers(-2, 3, (50, 8)).astype(np.float32)
    parts = [IndexShard(T[a:b], a).cos_topk(Q, 10) for a, b in shard_bounds(len(T), shards)]
    vals, ids = merge_topk([(p["vals"], p["ids"]) for p in parts], 10)
    ref_v, ref_i = _dense_topk(Q, T, 10)
    np.testing.assert_array_equal(vals, ref_v)
    # torch.topk inside a shard may pick any of the rows tied at its k-th slot: equal up to exact ties
    assert (ids == ref_i).mean() > 0.5
    np.testing.assert_array_equal(np.take_along_axis(Q @ T.T, ids, 1), ref_v)


def test_two_rounds_over_shards_give_exact_radii_topk_and_ranks_both_ways():
    """Round 1's merged radii and round 2's top-k and rank counts (summed over shards and blocks) equal the
    dense reference in both directions."""
    from mmea.search.csls import csls_dense, dense_ranks, dense_topk
    from mmea.search.knn import l2_normalize

    rng = np.random.default_rng(1)
    Q, T = l2_normalize(rng.normal(size=(90, 16))), l2_normalize(rng.normal(size=(90, 16)))
    gold = rng.permutation(90)  # link i: source i -> target gold[i]
    C = csls_dense(Q, T, 5, normalize=False)  # (90, 90)
    shards = [IndexShard(T[a:b], a) for a, b in shard_bounds(90, 3)]
    blocks = [(0, 40), (40, 90)]
    for s in shards:
        s.begin_columns(5, None)
    one = [[s.radius_pass(Q[a:b], 5, {"rows": np.arange(b - a), "cols": gold[a:b]}) for s in shards]
           for a, b in blocks]
    r_q = np.concatenate([(merge_topk([(x["vals"], np.zeros_like(x["vals"], np.int64)) for x in res], 5)[0]
                           .astype(np.float64).sum(1) / 5).astype(np.float32) for res in one])
    gc = np.concatenate([np.nanmax(np.stack([x["gold_cos"] for x in res]), 0) for res in one])
    r_t = np.concatenate([s.column_radii()[0] for s in shards])
    S = Q @ T.T
    np.testing.assert_allclose(C, (2 * S - r_q[:, None]) - r_t[None, :], atol=1e-6)
    back_gold = {"cos": gc, "csls": (2 * gc - r_t[gold]) - r_q}
    for s, (a, b) in zip(shards, shard_bounds(90, 3)):
        s.set_radius("eval", r_t[a:b])
        s.set_radius("search", r_t[a:b])
        s.set_back_links(gold, back_gold, np.arange(90))
    fwd, top, back = [], [], 0
    for a, b in blocks:
        res = [s.score_pass(Q[a:b], r_q[a:b], 5, row_key=np.arange(a, b),
                            fwd={"rows": np.arange(b - a), "cols": gold[a:b], "cos": gc[a:b], "r": r_t[gold[a:b]]})
               for s in shards]
        top.append(merge_topk([(x["csls"], x["ids"]) for x in res], 5)[1])
        fwd.append(1 + sum(x["fwd_above"]["csls"] + x["fwd_tied"]["csls"] for x in res))
        back = back + np.concatenate([x["back_above"]["csls"] + x["back_tied"]["csls"] for x in res])
    np.testing.assert_array_equal(np.concatenate(top), dense_topk(C, 5)[1])
    np.testing.assert_array_equal(np.concatenate(fwd), dense_ranks(C, gold))
    owner = np.searchsorted([b for _, b in shard_bounds(90, 3)], gold, side="right")
    ranks_back = np.empty(90, np.int64)
    ranks_back[np.argsort(owner, kind="stable")] = 1 + back
    Cb = (2 * S.T - r_t[:, None]) - r_q[None, :]  # targets as queries
    np.testing.assert_array_equal(ranks_back, dense_ranks(Cb[gold], np.arange(90)))


def test_approximate_shards_are_built_with_the_runs_index_options(monkeypatch):
    """``search.nprobe`` / ``ivf_storage`` reach the FAISS index of every shard (both sides), as in-process."""
    import mmea.engine.search as es

    made = []

    class Stop(Exception):
        pass

    class Recording:
        def __init__(self, ray, base, shards, **kw):
            made.append(kw)
            if len(made) == 2:
                raise Stop

    monkeypatch.setattr(es, "ShardedIndex", Recording)
    x = np.eye(8, dtype=np.float32)
    session = SimpleNamespace(shards=2, ray=None, workers=2)
    task = SimpleNamespace(test=np.zeros((0, 2), np.int64))
    with pytest.raises(Stop):
        es.ray_search_run(task, x, x, np.arange(8), np.arange(8), SearchConfig(index="ivf", nprobe=7,
                                                                                ivf_storage="flat"), session)
    assert [m["index_options"] for m in made] == [{"nprobe": 7, "storage": "flat"}] * 2
    shard = IndexShard(np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32), 0, index="ivf",
                       index_options={"nprobe": 3, "nlist": 4, "storage": "flat"})
    assert (shard.approx.nprobe, shard.approx.storage) == (3, "flat")


def test_ivf_shards_together_scan_what_one_index_scans():
    """With the default cells a slice's nprobe is scaled so that the slices scan the rows of one index
    over the whole side (2 slices at 1M: nprobe 16 on 2,048 cells each, not 32: twice the scan)."""
    from mmea.engine.shards import shard_index_options
    from mmea.search.knn import default_nlist

    m, half = 528_872, 264_436
    assert (default_nlist(m), default_nlist(half)) == (4096, 2048)
    assert shard_index_options("ivf", {"storage": "sq8"}, half, m) == {"storage": "sq8", "nprobe": 16}
    assert shard_index_options("ivf", {"nprobe": 64}, half, m)["nprobe"] == 32
    for parts in (2, 3, 4, 8):  # the rows scanned a query: within a rounding of the whole index's
        ms = -(-m // parts)
        opts = shard_index_options("ivf", {}, ms, m)
        scanned = parts * opts["nprobe"] * ms / default_nlist(ms)
        assert abs(scanned / (32 * m / default_nlist(m)) - 1) < 0.5 / opts["nprobe"] + 1e-9
    assert shard_index_options("ivf", {"nlist": 64, "nprobe": 8}, half, m) == {"nlist": 64, "nprobe": 8}
    assert shard_index_options("ivf", {"nprobe": 8}, m, m) == {"nprobe": 8}  # one slice: the whole index
    assert shard_index_options("hnsw", {"ef_search": 64}, half, m) == {"ef_search": 64}
    assert shard_index_options("ivf", {"nprobe": 1}, 100, 10_000)["nprobe"] == 1  # never below one cell
    shard = IndexShard(np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32), 0, index="ivf",
                       index_options={"nprobe": 8, "storage": "flat"}, total=800)
    assert shard.approx.nprobe == round(8 * default_nlist(200) / default_nlist(800)) == 2


def test_ray_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(MmeaInputError, match="needs the ray package"):
        import_ray()
    r = CliRunner().invoke(main, ["-q", "align", "--engine", "ray", "--model", "label-propagation",
                                  "--set", "features.names=off", "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "pip install ray" in r.output


def test_an_unreachable_address_names_it(tmp_path):
    with pytest.raises(MmeaInputError, match="127.0.0.1:1"):
        check_reachable("127.0.0.1:1", timeout_s=2)
    with pytest.raises(MmeaInputError, match="HOST:PORT"):
        check_reachable("nohost")
    r = CliRunner().invoke(main, ["-q", "align", "--ray-address", "127.0.0.1:1", "--model", "label-propagation",
                                  "--set", "features.names=off", "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "127.0.0.1:1" in r.output


class _FakeRay:
    """``wait`` / ``get`` of Ray over plain values; ``stuck_after``: tasks that finish before nothing does."""

    def __init__(self, stuck_after: int | None = None):
        self.stuck_after, self.finished, self.timeouts = stuck_after, 0, []

    def wait(self, pending, num_returns, timeout):
        self.timeouts.append(timeout)
        if self.stuck_after is not None and self.finished >= self.stuck_after:
            return [], pending
        self.finished += 1
        return pending[-1:], pending[:-1]  # out of order: gather must still return in order

    def get(self, refs):
        return [10 * r for r in refs]


def test_gather_returns_in_order_and_a_stalled_stage_stops_naming_what_is_left():
    s = RaySession(EngineConfig(name="ray", stall_minutes=0.5))
    s.ray = _FakeRay()
    assert s.gather([1, 2, 3], "parts", progress=False) == [10, 20, 30] and s.ray.timeouts == [30.0] * 3
    s.ray = _FakeRay(stuck_after=1)
    with pytest.raises(MmeaError) as e:
        s.gather([1, 2, 3], "label propagation of the parts", progress=False)
    assert "2 of 3 label propagation of the parts tasks finished nothing for 0.5 minutes (1 done)" in e.value.message
    assert "engine.stall_minutes=0" in e.value.hint
    s = RaySession(EngineConfig(name="ray", stall_minutes=0))  # 0: wait for ever
    s.ray = _FakeRay()
    assert s.gather([4], "parts", progress=False) == [40] and s.ray.timeouts == [None]
    from mmea.pipelines.align_config import load_config

    with pytest.raises(MmeaInputError, match="stall_minutes"):
        load_config(None, [], {"engine": {"stall_minutes": -1}})


def test_partitions_need_ray_and_label_propagation():
    with pytest.raises(MmeaInputError, match="need --engine ray"):
        with engine_for(EngineConfig(partitions=2), "label-propagation"):
            pass
    with pytest.raises(MmeaInputError, match="label-propagation only"):
        with engine_for(EngineConfig(name="ray", partitions=2), "selfmea"):
            pass


# -- on a 2-node local cluster ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    try:
        import ray
        from ray.cluster_utils import Cluster

        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                          "object_store_memory": 100 << 20})
        c.add_node(num_cpus=1, object_store_memory=100 << 20)
        ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
    except Exception as e:  # noqa: BLE001 - any failure to start Ray here is a skip, with its reason
        pytest.skip(f"Ray cannot start a local 2-node cluster on this machine: {type(e).__name__}: {e}")
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    from mmea.data.synth import generate_pair, synth_config

    out = tmp_path_factory.mktemp("ray") / "pair"
    generate_pair(synth_config({"entities": 2000, "seed": 1}), out, progress=False)
    return out


def _align(pair, out, *extra):
    from mmea.pipelines.align import run_align
    from mmea.pipelines.align_config import load_config

    cfg = load_config(None, ["model.name=label-propagation", "model.anchor_dim=256", "features.names=off",
                             f"data.pair={pair}", "data.seed_ratio=0.3", "device=cpu", *extra])
    return run_align(cfg, out=out, quiet=True)["metrics"]


def test_engine_ray_equals_in_process_on_two_nodes(cluster, pair, tmp_path):
    local = _align(pair, tmp_path / "local")
    on_ray = _align(pair, tmp_path / "ray", "engine.name=ray", "engine.shards=3")
    assert local["engine"] == {"name": "local"}
    e = on_ray["engine"]
    assert e["name"] == "ray" and e["nodes"] == 2 and e["shards"] == 3 and e["ray_version"]
    assert on_ray["test_by_method"] == local["test_by_method"]
    a, b = pd.read_csv(tmp_path / "local" / "alignment.csv"), pd.read_csv(tmp_path / "ray" / "alignment.csv")
    pd.testing.assert_frame_equal(a, b)  # identical ids, order, scores, mutual flags
    np.testing.assert_array_equal(np.load(tmp_path / "local" / "test_ranks.npy"),
                                  np.load(tmp_path / "ray" / "test_ranks.npy"))
    assert json.loads((tmp_path / "ray" / "metrics.json").read_text())["engine"]["cluster"] == "connected"


def test_approximate_pass_with_lists_on_ray_shards_equals_in_process(cluster, pair, tmp_path):
    """--engine ray with an approximate index runs the in-process pass (ranks from lists, channels, validation
    top 2, one-to-one graph) with its lists on the shards; exhaustive cells make both exact: identical."""
    extra = ("search.index=ivf", "search.ivf_storage=flat", "search.nprobe=100000", "features.names=on",
             "model.name_weight=0.5", "model.name_dim=64", "search.topk=10")
    local = _align(pair, tmp_path / "local", *extra)
    on_ray = _align(pair, tmp_path / "ray", *extra, "engine.name=ray", "engine.shards=2")
    assert "lists (ray-ivf[2 shards, nprobe " in on_ray["ranks_from"]  # the model's channels, on the shards
    assert "] + structure + names)" in on_ray["ranks_from"]
    assert "lists (ivf + structure + names)" in local["ranks_from"]
    rec_ray, rec_local = (m["test_by_method"]["src->tgt/reciprocal"].pop("ranks_from") for m in (on_ray, local))
    assert "(ray-ivf[2 shards, nprobe " in rec_ray and "(ivf) top-50 list" in rec_local  # the re-ranked lists' index
    assert on_ray["test_by_method"] == local["test_by_method"]
    assert on_ray["test"]["hits@1_one_to_one"] == local["test"]["hits@1_one_to_one"]
    np.testing.assert_array_equal(np.load(tmp_path / "local" / "test_ranks.npy"),
                                  np.load(tmp_path / "ray" / "test_ranks.npy"))
    a, b = pd.read_csv(tmp_path / "local" / "alignment.csv"), pd.read_csv(tmp_path / "ray" / "alignment.csv")
    pd.testing.assert_frame_equal(a, b)


def _clustered(n=3000, d=32, seed=0):
    from mmea.search.knn import l2_normalize

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(60, d)) * 3
    src = centres[rng.integers(0, 60, n)] + rng.normal(size=(n, d))
    tgt = src[rng.permutation(n)] + 0.5 * rng.normal(size=(n, d))
    return l2_normalize(src), l2_normalize(tgt)


def test_ivf_shards_recall_the_in_process_top10(cluster):
    from mmea.engine.search import ray_search_run
    from mmea.search.csls import csls_topk

    src, tgt = _clustered()
    rows, cand = np.arange(len(src)), np.arange(len(tgt))
    task = SimpleNamespace(test=np.zeros((0, 2), np.int64))
    with RaySession(EngineConfig(name="ray", shards=2)) as session:
        al, ranks, _ = ray_search_run(task, src, tgt, rows, cand, SearchConfig(index="ivf", topk=10), session)
    exact = csls_topk(src, tgt, 10, index="torch").ids
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(al.result.ids, exact)])
    assert ranks is None and not al.result.exact and recall >= 0.99


def test_partitioned_mode_reports_its_recall(cluster, pair, tmp_path):
    m = _align(pair, tmp_path / "parts", "engine.name=ray", "engine.partitions=2")
    p = m["engine"]["partition"]
    assert p["parts"] == 2 and p["train_links_same_part"] == 1.0 and 0 < p["test_links_same_part"] < 1
    g = p["global_search"]
    assert g["hits@1"] == pytest.approx(m["test"]["hits@1"], abs=1e-4)
    assert g["hits@10_split"] is not None and m["model_info"]["partitioned"]["halo"] is True
    assert Path(tmp_path / "parts" / "alignment.csv").is_file()
    assert m["model_info"]["partitioned"]["names_used"] is False and m["names_used"] is False
    # names join every part's rows as in the in-process model (weight not chosen: the first of name_weights)
    named = _align(pair, tmp_path / "parts-names", "engine.name=ray", "engine.partitions=2", "features.names=on",
                   "model.name_weight=-1", "model.name_dim=64")
    info = named["model_info"]["partitioned"]
    assert info["names_used"] is True and info["name_weight"] == 0.25 and "first of" in info["name_weight_from"]
    assert named["names_used"] is True and named["test"]["hits@1"] > m["test"]["hits@1"] + 0.05
    # the model's name pseudo-seeds label the parts too (the cut stays around the train links)
    seeded = _align(pair, tmp_path / "parts-seeded", "engine.name=ray", "engine.partitions=2", "features.names=on",
                    "model.name_weight=-1", "model.name_dim=64", "model.name_seeds=true")
    assert seeded["model_info"]["pseudo_seeds"]["count"] > 0
    assert seeded["model_info"]["partitioned"]["train_links_same_part"] == 1.0
    assert seeded["test"]["hits@1"] > named["test"]["hits@1"]


def test_parallel_char_ngram_encoding_equals_the_in_process_encoder(cluster):
    from mmea.encoders.names import CharNgramEncoder
    from mmea.engine.encode import CharNgramBatches, in_process, parallel_encode

    rng = np.random.default_rng(0)
    syll = ["ka", "ro", "mi", "st", "el", "ph", "ou", "zy", "an"]
    texts = ["".join(rng.choice(syll, rng.integers(2, 6))) + " " + "".join(rng.choice(syll, 3)) for _ in range(700)]
    texts[5] = ""  # an entity without a name: a zero row, as in-process
    enc = CharNgramEncoder(dim=64, progress=False)
    ref = enc.encode(texts).matrix
    factory = CharNgramBatches(enc, texts)
    with RaySession(EngineConfig(name="ray")) as session:
        got = parallel_encode(session, factory, texts, batch_size=128)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(in_process(factory, texts, 128), ref)
