"""alignment.csv: frame contents, CSV round trip through evaluate_alignment_file, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from mmea.data.graph import AlignmentTask, KnowledgeGraph
from mmea.errors import DataFormatError, MmeaInputError
from mmea.evaluation import evaluate_embeddings
from mmea.export import (COLUMNS, alignment_frame, evaluate_alignment_file, read_alignment, read_gold_links,
                         write_alignment)
from mmea.search.matching import align, candidate_rows


def kg(name: str, n: int) -> KnowledgeGraph:
    ids = [f"{name}{i}" for i in range(n)]
    return KnowledgeGraph(name, ids, [f"http://{name}.org/e/{i}" for i in range(n)], [f"{name} {i}" for i in range(n)])


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    n = 40
    src = rng.standard_normal((n, 16)).astype(np.float32)
    perm = rng.permutation(n)
    tgt = np.empty_like(src)
    tgt[perm] = src + 0.6 * rng.standard_normal((n, 16)).astype(np.float32)  # source i <-> target perm[i]
    links = np.stack([np.arange(n), perm], 1)
    task = AlignmentTask("toy", kg("a", n), kg("b", n), links[:10], links[10:14], links[14:])
    return task, src, tgt


def test_frame_columns_and_semantics(setup):
    task, src, tgt = setup
    s_rows, t_rows = candidate_rows(task, "test")
    a = align(src, tgt, s_rows, t_rows, topk=len(t_rows))
    df = alignment_frame(task, a, gold=task.test)
    assert list(df.columns) == COLUMNS
    assert len(df) == len(t_rows) * len(s_rows)
    assert df["rank"].tolist()[:3] == [1, 2, 3]
    assert len(alignment_frame(task, a, topk=3)) == 3 * len(s_rows)
    first = df[df["rank"] == 1]
    second = df[df["rank"] == 2]
    np.testing.assert_allclose(first["margin"].to_numpy(), first["score"].to_numpy() - second["score"].to_numpy(),
                               atol=1e-6)
    assert (df.loc[df["rank"] > 1, "margin"] <= 0).all()
    np.testing.assert_array_equal(df["score"], df["csls"])  # ranked by CSLS
    assert df["src_id"].iloc[0] == task.source.ids[s_rows[0]]
    assert df["tgt_uri"].iloc[0] == task.target.uris[t_rows[a.result.ids[0, 0]]]
    assert set(df["gold"].dropna().tolist()) <= {True, False}
    # mutual: rank-1 pairs whose target's best source is this source
    assert not df.loc[df["rank"] > 1, "mutual"].any()
    best_src = {}
    for t, s, c in zip(df["tgt_id"], df["src_id"], df["score"]):  # every test source lists every test target
        best_src.setdefault(t, []).append((-c, s))
    for s, t, mu in zip(first["src_id"], first["tgt_id"], first["mutual"]):
        assert mu == (min(best_src[t])[1] == s)
    no_gold = alignment_frame(task, a)
    assert no_gold["gold"].isna().all()


def test_frame_with_matching_puts_matched_pair_first(setup):
    task, src, tgt = setup
    s_rows, t_rows = candidate_rows(task, "test")
    a = align(src, tgt, s_rows, t_rows, topk=2, matcher="hungarian")
    df = alignment_frame(task, a, topk=2, gold=task.test)
    assert list(df.columns) == COLUMNS + ["matched"]
    matched = df[df["matched"]]
    assert len(matched) == len(s_rows) and matched["tgt_id"].is_unique
    assert matched.groupby("src_id").size().max() == 1


def test_round_trip_through_evaluate(setup, tmp_path):
    task, src, tgt = setup
    s_rows, t_rows = candidate_rows(task, "test")
    a = align(src, tgt, s_rows, t_rows, topk=len(t_rows))
    path = write_alignment(alignment_frame(task, a, gold=task.test), tmp_path / "out" / "alignment.csv")
    gold = tmp_path / "gold.tsv"
    gold.write_text("".join(f"{task.source.ids[s]}\t{task.target.ids[t]}\n" for s, t in task.test))
    res = evaluate_alignment_file(path, gold)
    ref = evaluate_embeddings(src, tgt, task.test)["test_by_method"]["src->tgt/csls"]
    assert res["hits@1"] == pytest.approx(ref["hits@1"])
    for k in ("hits@1", "hits@5", "hits@10", "mr", "mrr"):
        assert res["ranking"][k] == pytest.approx(ref[k]), k
    assert res["coverage"] == 1.0 and res["precision"] == pytest.approx(res["recall"])
    # with the KGs: ids resolve, same numbers; URIs work too
    res_kg = evaluate_alignment_file(path, gold, src_index=task.source, tgt_index=task.target)
    assert res_kg["hits@1"] == res["hits@1"]


def test_other_tools_formats(tmp_path, setup):
    task, _, _ = setup
    gold = tmp_path / "gold.txt"
    gold.write_text("src_id tgt_id\na0 b0\na1  b1\na2\tb2\n")
    assert [g[1:] for g in read_gold_links(gold)] == [("a0", "b0"), ("a1", "b1"), ("a2", "b2")]
    tsv = tmp_path / "pairs.tsv"  # headerless two-column TSV, as OpenEA writes
    tsv.write_text("a0\tb0\na1\tb2\na2\tb2\n")
    r = evaluate_alignment_file(tsv, gold)
    assert r["hits@1"] == pytest.approx(2 / 3) and "ranking" not in r
    csv = tmp_path / "named.csv"  # other column names, a score but no rank: ranked by score
    csv.write_text("source,target,score\na0,b1,0.2\na0,b0,0.9\na1,b1,0.5\n")
    r = evaluate_alignment_file(csv, gold)
    assert r["hits@1"] == pytest.approx(2 / 3) and r["coverage"] == pytest.approx(2 / 3)
    assert r["precision"] == 1.0
    assert r["ranking"]["max_candidates"] == 2 and r["ranking"]["mr"] is None  # a2's gold target is missing
    assert r["ranking"]["mr_lower_bound"] == pytest.approx((1 + 1 + 1) / 3)  # a2 has no list: rank >= 1
    matched = tmp_path / "matched.csv"  # the matched row is the prediction even when ranked lower
    matched.write_text("src_id,tgt_id,rank,matched\na0,b1,1,false\na0,b0,2,true\n")
    assert evaluate_alignment_file(matched, gold)["precision"] == 1.0


@pytest.mark.parametrize("content,line,reason", [
    ("src_id,tgt_id,score\na0,b0,0.5\na1,b1\n", 3, "expected 3 fields"),
    ("src_id,tgt_id,score\na0,b0,high\n", 2, "not a number"),
    ("src_id,tgt_id,rank\na0,b0,1\na1,b1,0\n", 3, "rank"),
    ("src_id,tgt_id,rank\na0,b0,1.5\n", 2, "rank"),
    ("src_id,tgt_id\n,b0\n", 2, "empty src_id"),
    ("left_entity,right_entity,score,x\na0,b0,1,2\n", 1, "header has no source and target column"),
    ("src_id,tgt_id,matched\na0,b0,maybe\n", 2, "boolean"),
    ('src_id,tgt_id\n"a0,b0\n', 2, "unclosed quote"),
])
def test_bad_alignment_rows(tmp_path, content, line, reason):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(DataFormatError, match=reason) as e:
        read_alignment(p)
    assert e.value.line_no == line
    assert str(p) in str(e.value)


def test_bad_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("\n\n")
    with pytest.raises(DataFormatError, match="empty"):
        read_alignment(empty)
    binary = tmp_path / "latin1.csv"
    binary.write_bytes("src_id,tgt_id\nä,b\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match="UTF-8"):
        read_alignment(binary)
    with pytest.raises(DataFormatError, match="not found"):
        read_alignment(tmp_path / "missing.csv")
    gold = tmp_path / "gold.txt"
    gold.write_text("a0 b0\na1 b1 extra\n")
    with pytest.raises(DataFormatError) as e:
        read_gold_links(gold)
    assert e.value.line_no == 2


def test_unknown_ids_are_listed(tmp_path, setup):
    task, _, _ = setup
    gold = tmp_path / "gold.txt"
    gold.write_text("a0 b0\na1 b1\n")
    aln = tmp_path / "a.csv"
    aln.write_text("src_id,tgt_id\na0,b0\nzz1,b1\nzz2,b1\na1,nope\n")
    with pytest.raises(MmeaInputError, match=r"2 unknown source ids: 'zz1' \(line 3\), 'zz2' \(line 4\)"):
        evaluate_alignment_file(aln, gold, src_index=task.source, tgt_index=task.target)
    other = tmp_path / "other.csv"
    other.write_text("src_id,tgt_id\nx0,y0\n")
    with pytest.raises(MmeaInputError, match="none of its 1 source ids"):
        evaluate_alignment_file(other, gold)


def test_pipeline_call_style(setup):
    """csls_topk + MATCHERS.make(...).match(src, tgt, result) + alignment_frame(task, rows, cand, result)."""
    from mmea.search import MATCHERS, csls_topk

    task, src, tgt = setup
    rows, cand = task.test[:, 0], task.test[:, 1]
    result = csls_topk(src[rows], tgt[cand], topk=2, reverse=True)
    matched = MATCHERS.make("greedy").match(src[rows], tgt[cand], result)
    assert all(isinstance(i, int) and isinstance(j, int) for i, j, _ in matched)
    df = alignment_frame(task, rows, cand, result, topk=1, matched=matched, gold=cand)
    assert len(df) == len(rows) and df["matched"].all()
    assert df["gold"].notna().all() and df["mutual"].notna().all()
    # the same through align(): identical mutual flags and scores
    a = align(src, tgt, rows, cand, topk=2, matcher="greedy")
    df2 = alignment_frame(task, a, topk=1, gold=cand)
    assert df2["mutual"].tolist() == df["mutual"].tolist()
    np.testing.assert_allclose(df2["score"], df["score"], atol=1e-6)
    plain = alignment_frame(task, rows, cand, csls_topk(src[rows], tgt[cand], topk=2))
    assert plain["mutual"].isna().all()  # no reverse search: unknown, not False
    with pytest.raises(MmeaInputError, match="do not fit"):
        alignment_frame(task, rows[:3], cand, result)


def test_gold_links_skip_comment_lines(tmp_path):
    from mmea.export import read_gold_links

    p = tmp_path / "links.tsv"
    p.write_text("# kg1_entity<TAB>kg2_entity\na\tb\nc d\n")
    assert read_gold_links(p) == [(2, "a", "b"), (3, "c", "d")]
    p.write_text("a\tb\tc\n")
    with pytest.raises(DataFormatError, match="line 1.*expected 2 fields"):
        read_gold_links(p)
