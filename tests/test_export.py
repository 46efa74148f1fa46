"""alignment.csv: frame contents, CSV round trip through evaluate_alignment_file, bad input."""

from __future__ import annotations

import re

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


# -- issue 19: evaluate with candidate lists, header detection, what was read ---------------------

def _cli(*args):
    from click.testing import CliRunner

    from mmea.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def test_gold_target_outside_the_candidates_is_a_miss_at_every_k(tmp_path):
    """Item 1: a missing gold target used to get rank longest + 1, a hit for every k above the list."""
    import json

    aln = tmp_path / "a.csv"  # two candidates per source; a2's gold target b2 is not among them
    aln.write_text("src_id,tgt_id,score,rank\na0,b0,0.9,1\na0,b5,0.1,2\na1,b6,0.8,1\na1,b1,0.7,2\n"
                   "a2,b7,0.6,1\na2,b8,0.5,2\n")
    gold = tmp_path / "gold.tsv"
    gold.write_text("a0\tb0\na1\tb1\na2\tb2\n")
    rk = evaluate_alignment_file(aln, gold, ks=(1, 2, 10))["ranking"]
    assert rk["hits@1"] == pytest.approx(1 / 3) and rk["hits@2"] == pytest.approx(2 / 3)
    assert rk["hits@10"] == pytest.approx(2 / 3)  # was 1.0: a2 counted at rank 3 <= 10
    assert rk["gold_in_candidates"] == pytest.approx(2 / 3) and rk["gold_missing"] == 1
    assert rk["mrr"] == pytest.approx((1 + 1 / 2 + 0) / 3)  # the missing one adds 0
    assert rk["mr"] is None and rk["mr_found"] == pytest.approx(1.5)
    assert rk["mr_lower_bound"] == pytest.approx((1 + 2 + 3) / 3)  # a2 at its list length + 1
    assert "miss at every k" in rk["missing_gold"]
    r = _cli("evaluate", "--alignment", aln, "--gold", gold, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["ranking"]["hits@10"] == pytest.approx(2 / 3)
    assert "warning: 1 of 3 gold targets are not among their source's candidates" in r.output
    r = _cli("evaluate", "--alignment", aln, "--gold", gold)
    assert r.exit_code == 0 and "2 of 3 gold targets among them" in r.output and "mr_lower_bound" in r.output


def test_every_gold_target_found_gives_the_plain_mean_rank(tmp_path):
    aln = tmp_path / "a.csv"
    aln.write_text("src_id,tgt_id,rank\na0,b0,1\na0,b1,2\na1,b0,1\na1,b1,2\n")
    gold = tmp_path / "gold.tsv"
    gold.write_text("a0 b0\na1 b1\n")
    rk = evaluate_alignment_file(aln, gold)["ranking"]
    assert rk["mr"] == rk["mr_found"] == rk["mr_lower_bound"] == pytest.approx(1.5)
    assert rk["gold_in_candidates"] == 1.0 and rk["mrr"] == pytest.approx(0.75)


@pytest.mark.parametrize("content, message", [
    ("src_id,score\n1,0.5\n", "the header has no target column (columns: src_id, score)"),  # the repro
    ("score,tgt_id\n0.5,b0\n", "the header has no source column"),
    ("rank,gold\n1,true\n", "the header has no source and target column"),
])
def test_a_header_without_the_id_columns_is_an_error(tmp_path, content, message):
    """Item 14: a first line of known column names is a header, never a headerless row of ids."""
    p = tmp_path / "a.csv"
    p.write_text(content)
    with pytest.raises(DataFormatError, match=re.escape(message)) as e:
        read_alignment(p)
    assert e.value.line_no == 1
    gold = tmp_path / "gold.tsv"
    gold.write_text("1 0.5\n")
    r = _cli("evaluate", "--alignment", p, "--gold", gold)
    assert r.exit_code == 2 and f"{p}, line 1: the header has no" in r.output and "hint: name it" in r.output


def test_evaluate_says_which_format_it_read(tmp_path):
    gold = tmp_path / "gold.tsv"
    gold.write_text("a0 b0\na1 b1\n")
    plain = tmp_path / "pairs.tsv"
    plain.write_text("a0\tb0\na1\tb2\n")
    r = _cli("evaluate", "--alignment", plain, "--gold", gold)
    assert r.exit_code == 0
    assert f"read {plain}: no header (2 fields per line read as src_id, tgt_id), tab-separated" in r.output
    named = tmp_path / "named.csv"
    named.write_text("source,target,confidence\na0,b0,x\n")
    r = _cli("evaluate", "--alignment", named, "--gold", gold)
    assert r.exit_code == 0
    assert "header on line 1, comma-separated, columns source (as src_id), target (as tgt_id), confidence" \
        in r.output


def test_reader_counts_what_it_skips_and_accepts(tmp_path):
    from mmea.alignment_csv import read_alignment_file

    p = tmp_path / "a.csv"
    p.write_bytes(b"\xef\xbb\xbfsrc_id,tgt_id,score\r\n\r\na0,b0,0.5\r\na0,b0,0.5\r\n  \na1,\"b,1\",0.2")
    df, fmt = read_alignment_file(p)
    assert df["tgt_id"].tolist() == ["b0", "b,1"] and df["_line"].tolist() == [3, 6]
    assert fmt.bom and fmt.blank_lines == 2 and fmt.duplicate_rows == 1 and fmt.unterminated_last_line == 6
    assert any("line 4, the pair of line 3" in w for w in fmt.warnings)
    assert "skipped 2 blank and 1 duplicate lines" in fmt.describe()
    with pytest.raises(DataFormatError, match="line 6: the last line has no newline"):
        read_alignment_file(p, run_file=True)


@pytest.mark.parametrize("content, line, reason", [
    (b"src_id,tgt_id\na0,b\x000\n", 2, "control character"),
    (b"src_id,tgt_id\na0,b\r0\n", 2, "control character '\\r'"),
    (b"src_id,tgt_id\na0\t,b0\n", 2, "control character '\\t'"),
    (b"src_id,tgt_id\na0,b\"0\n", 2, "quote character inside an unquoted field"),
    (b"src_id,tgt_id\na0,b0\na1,\xe9\n", 3, "not valid UTF-8"),
    ("src_id,tgt_id\na0,b0\n".encode("utf-16"), 1, "it looks like UTF-16"),
    (b"src_id,tgt_id,score\na0,b0,inf\n", 2, "not finite"),
    (b"src_id,tgt_id,score\na0,b0,1_0\n", 2, "not a number"),
    (b"src_id,tgt_id\n", 1, "no data rows after the header"),
])
def test_corrupted_bytes_name_the_line(tmp_path, content, line, reason):
    p = tmp_path / "bad.csv"
    p.write_bytes(content)
    with pytest.raises(DataFormatError, match=re.escape(reason)) as e:
        read_alignment(p)
    assert f"line {line}" in str(e.value) and str(p) in str(e.value)


def test_unreadable_alignment_and_gold_files_are_named(tmp_path, monkeypatch):
    from pathlib import Path

    gold = tmp_path / "gold.tsv"
    gold.write_text("a0 b0\n")
    r = _cli("evaluate", "--alignment", tmp_path, "--gold", gold)
    assert r.exit_code == 2 and "is a directory" in r.output
    p = tmp_path / "a.csv"
    p.write_text("src_id,tgt_id\na0,b0\n")

    def denied(self, *a, **k):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(DataFormatError, match=re.escape(f"{p}: cannot be read (permission denied)")):
        read_alignment(p)
    r = _cli("evaluate", "--alignment", p, "--gold", gold)
    assert r.exit_code == 2 and f"{p}: cannot be read (permission denied)" in r.output
