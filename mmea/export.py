"""Alignment CSV export, scoring of any alignment file, and export of a finished run.

``alignment.csv`` has one row per (source, candidate target), long format:

==========  ===================================================================
src_id      source entity id as in the dataset files (``src_uri``, ``src_name`` alongside)
tgt_id      target entity id (``tgt_uri``, ``tgt_name`` alongside)
score       the ranking score used (CSLS or cosine, see ``--similarity``)
rank        1-based position of the target in the source's ranking (empty if
            a matcher chose a target beyond the ranked list)
csls        CSLS score of the pair
margin      score minus the best score among the source's *other* candidates:
            for the top candidate the gap to the runner-up (a confidence),
            negative for the others
mutual      the target's best source is this source (mutual nearest neighbours)
gold        True/False where the source has a known gold target, empty otherwise
matched     (only with ``--match``) the pair belongs to the one-to-one alignment
==========  ===================================================================

:func:`evaluate_alignment_file` scores an alignment CSV made by ``mmea`` or by
any other tool (only ``src_id`` and ``tgt_id`` are required; ``rank``,
``score`` and ``matched`` are used when present) against a gold-link file
(``mmea evaluate``); :func:`export_run` writes a run's calibrated pairs
(``mmea export``).  Both read through :mod:`mmea.alignment_csv`, which names the
file and line of any problem; the CLI only parses options and prints.
"""

from __future__ import annotations

import json
import math
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .alignment_csv import AlignmentFormat, read_alignment, read_alignment_file, read_gold_links
from .errors import MmeaError, MmeaInputError

__all__ = [
    "COLUMNS",
    "alignment_frame",
    "write_alignment",
    "read_alignment",
    "read_alignment_file",
    "read_gold_links",
    "evaluate_alignment_file",
    "candidate_ranking",
    "export_run",
    "write_csv",
    "write_jsonl",
    "write_ntriples",
    "nt_iri",
    "OWL_SAME_AS",
]

COLUMNS = ["src_id", "src_uri", "src_name", "tgt_id", "tgt_uri", "tgt_name", "score", "rank", "csls", "margin",
           "mutual", "gold"]



# -- export ------------------------------------------------------------------------

def _display_lists(res, matching, topk: int):
    """Per source, the targets to write, best first: the matched target (if any), then the ranking.

    Returns ``(cand (n, K) int64 target positions or -1, rank (n, K) float with NaN,
    score (n, K), csls (n, K), margin (n, K), is_matched (n, K) bool)``.
    """
    n, T = res.ids.shape
    ids, scores, csls = res.ids, res.scores.astype(np.float64), res.csls.astype(np.float64)
    j = np.full(n, -1, np.int64)  # matched target position per source, -1 = none
    js = np.full(n, np.nan)
    jc = np.full(n, np.nan)
    if matching is not None:
        j[matching.src] = matching.tgt
        js[matching.src] = matching.score
        if res.method == "csls":
            jc[matching.src] = matching.score
        else:
            jc[matching.src] = (2 * matching.score.astype(np.float64) - res.r_src[matching.src]
                                - res.r_tgt[matching.tgt])
    # ext: slot 0 = matched target, slots 1..T = the ranking; drop duplicates and empty slots
    e_ids = np.concatenate([j[:, None], ids], 1)  # (n, 1 + T)
    e_score = np.concatenate([js[:, None], scores], 1)
    e_csls = np.concatenate([jc[:, None], csls], 1)
    e_rank = np.concatenate([np.full((n, 1), np.nan), np.arange(1, T + 1, dtype=np.float64)[None, :].repeat(n, 0)], 1)
    in_list = (ids == j[:, None]) & (j[:, None] >= 0)  # (n, T)
    e_rank[:, 0] = np.where(in_list.any(1), in_list.argmax(1) + 1, np.nan)
    drop = np.concatenate([(j < 0)[:, None], in_list | (ids < 0)], 1)
    e_score = np.where(drop, np.nan, e_score)
    # margin: score minus the best other kept candidate of the same source
    filled = np.where(drop, -np.inf, e_score)
    best_at = np.argmax(filled, axis=1)  # first maximum
    best = filled[np.arange(n), best_at]
    second = filled.copy()
    second[np.arange(n), best_at] = -np.inf
    second = second.max(1)
    other_best = np.where(np.arange(1 + T)[None, :] == best_at[:, None], second[:, None], best[:, None])
    margin = np.where(np.isfinite(other_best), e_score - other_best, np.nan)
    order = np.argsort(drop, axis=1, kind="stable")[:, :topk]  # kept slots first, in order

    def take(a):
        return np.take_along_axis(a, order, 1)

    keep = ~take(drop)
    is_matched = (order == 0) & keep
    return (np.where(keep, take(e_ids), -1), take(e_rank), take(e_score), take(e_csls), take(margin),
            is_matched)


def _gold_column(src: np.ndarray, tgt: np.ndarray, src_pos: np.ndarray, gold: Any, n_rows: int):
    """True/False where the source's gold target is known, NA elsewhere (nullable boolean)."""
    import pandas as pd

    if gold is None:
        return pd.array([pd.NA] * len(src), dtype="boolean")
    gold = np.asarray(gold, dtype=np.int64)
    if gold.ndim == 1:  # one gold target per source row, -1 = unknown
        if len(gold) != n_rows:
            raise MmeaInputError(f"gold has {len(gold)} targets for {n_rows} source rows")
        g = gold[src_pos]
        return pd.array([None if x < 0 else bool(x == t) for x, t in zip(g.tolist(), tgt.tolist())],
                        dtype="boolean")
    gold = gold.reshape(-1, 2)
    gold_of: dict[int, set] = {}
    for a, b in gold.tolist():
        gold_of.setdefault(a, set()).add(b)
    return pd.array([(b in gold_of[a]) if a in gold_of else None for a, b in zip(src.tolist(), tgt.tolist())],
                    dtype="boolean")


def gold_targets_frame(task, links: Any):
    """``src_id, tgt_id, tgt_uri, tgt_name`` of each gold link ``(g, 2)`` (internal ids): what
    ``mmea report`` shows for a gold target that alignment.csv does not list
    (:data:`mmea.runs.GOLD_FILE`)."""
    import pandas as pd

    links = np.asarray(links, dtype=np.int64).reshape(-1, 2)
    S, T = task.source, task.target
    return pd.DataFrame({"src_id": [S.ids[i] for i in links[:, 0]], "tgt_id": [T.ids[j] for j in links[:, 1]],
                         "tgt_uri": [T.uris[j] for j in links[:, 1]], "tgt_name": [T.names[j] for j in links[:, 1]]})


def alignment_frame(task, src_rows: Any, tgt_rows: Any = None, result=None, *, topk: int | None = None,
                    matched=None, gold: Any = None, reverse_best: Any = None):
    """The alignment as a ``pandas.DataFrame`` with :data:`COLUMNS` (+ ``matched`` with a matcher).

    Call as ``alignment_frame(task, src_rows, tgt_rows, result, ...)`` or
    ``alignment_frame(task, alignment, ...)`` with an
    :class:`~mmea.search.matching.Alignment` from :func:`~mmea.search.matching.align`.

    Args:
        task: the :class:`~mmea.data.graph.AlignmentTask` (ids, URIs, names).
        src_rows: ``(n,)`` internal source ids, one per row of ``result``.
        tgt_rows: ``(m,)`` internal target ids that ``result.ids`` index.
        result: the :class:`~mmea.search.csls.SearchResult` (at least 2 candidates for the margin).
        topk: rows per source (default: all the search kept); a matched pair comes first.
        matched: a :class:`~mmea.search.matching.Matching` (positions into the rows) or ``None``.
        gold: ``(n,)`` gold target internal id per source row (``-1`` unknown), or
            ``(g, 2)`` internal gold links (e.g. ``task.test``); ``None`` leaves ``gold`` empty.
        reverse_best: ``(m,)`` best source position of each target (default
            ``result.reverse_best``); without it ``mutual`` is empty.
    """
    import pandas as pd

    if tgt_rows is None and result is None and hasattr(src_rows, "result"):
        al = src_rows
        src_rows, tgt_rows, result = al.src_rows, al.tgt_rows, al.result
        matched = al.matching if matched is None else matched
        reverse_best = al.reverse_best if reverse_best is None else reverse_best
    if result is None or tgt_rows is None:
        raise MmeaInputError("alignment_frame needs (src_rows, tgt_rows, result) or an Alignment")
    res = result
    src_rows = np.asarray(src_rows, dtype=np.int64).reshape(-1)
    tgt_rows = np.asarray(tgt_rows, dtype=np.int64).reshape(-1)
    if len(src_rows) != len(res) or len(tgt_rows) != len(res.r_tgt):
        raise MmeaInputError(f"{len(src_rows)} source rows / {len(tgt_rows)} target rows do not fit a search "
                             f"result of {len(res)} x {len(res.r_tgt)}")
    if reverse_best is None:
        reverse_best = res.reverse_best
    topk = res.topk if topk is None else int(topk)
    if topk < 1:
        raise MmeaInputError(f"--topk must be >= 1, got {topk}")
    cand, rank, score, csls, margin, is_matched = _display_lists(res, matched, topk)
    n, K = cand.shape
    keep = (cand >= 0).reshape(-1)
    src_pos = np.repeat(np.arange(n), K)[keep]
    tgt_pos = cand.reshape(-1)[keep]
    src = src_rows[src_pos]
    tgt = tgt_rows[tgt_pos]
    S, T = task.source, task.target
    if reverse_best is not None:
        # mutual nearest neighbours: the target is the source's best and the source is the target's best
        reverse_best = np.asarray(reverse_best, dtype=np.int64)
        mutual = pd.array((reverse_best[tgt_pos] == src_pos) & (res.ids[src_pos, 0] == tgt_pos), dtype="boolean")
    else:
        mutual = pd.array([pd.NA] * len(src), dtype="boolean")
    frame = {
        "src_id": [S.ids[i] for i in src],
        "src_uri": [S.uris[i] for i in src],
        "src_name": [S.names[i] for i in src],
        "tgt_id": [T.ids[i] for i in tgt],
        "tgt_uri": [T.uris[i] for i in tgt],
        "tgt_name": [T.names[i] for i in tgt],
        "score": score.reshape(-1)[keep].astype(np.float32),
        "rank": pd.array([None if math.isnan(r) else int(r) for r in rank.reshape(-1)[keep]], dtype="Int64"),
        "csls": csls.reshape(-1)[keep].astype(np.float32),
        "margin": margin.reshape(-1)[keep].astype(np.float32),
        "mutual": mutual,
        "gold": _gold_column(src, tgt, src_pos, gold, n),
    }
    if matched is not None:
        frame["matched"] = is_matched.reshape(-1)[keep]
    return pd.DataFrame(frame)


def write_alignment(df, path: str | Path) -> Path:
    """Write the frame as CSV (``gold`` empty where unknown), atomically: a kill mid-write leaves
    the previous file (or none), never a truncated one; returns the path."""
    from .runs import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


# -- export formats (mmea export) --------------------------------------------------

OWL_SAME_AS = "http://www.w3.org/2002/07/owl#sameAs"
#: An absolute IRI starts with a scheme (RFC 3987): a letter, then letters, digits, + - .
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
#: Characters N-Triples forbids inside <...> (besides UCHAR escapes): controls, space, <>"{}|^`\
_NT_FORBIDDEN = re.compile(r'[\x00-\x20<>"{}|^`\\]')


@contextmanager
def _text_out(dest: Any):
    """A text stream for ``dest``: a path (parents created, UTF-8) or an open stream (left open)."""
    if hasattr(dest, "write"):
        yield dest
        return
    path = Path(dest)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        yield fh


def _plain(v: Any) -> Any:
    """A JSON value: NaN / NA -> None, numpy scalars -> Python."""
    import pandas as pd

    if v is None or v is pd.NA:
        return None
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(v) else float(v)
    return v


def write_csv(df, dest: Any) -> Any:
    """The frame as CSV (empty cells where a value is missing); ``dest`` is a path or a text stream."""
    with _text_out(dest) as fh:
        df.to_csv(fh, index=False)
    return dest


def write_jsonl(df, dest: Any) -> Any:
    """JSON Lines: one object per row with the frame's columns (missing values are ``null``)."""
    cols = list(df.columns)
    with _text_out(dest) as fh:
        for row in df.itertuples(index=False, name=None):
            fh.write(json.dumps({c: _plain(v) for c, v in zip(cols, row)}, ensure_ascii=False) + "\n")
    return dest


def nt_iri(value: Any, base: str | None = None) -> str | None:
    """``value`` as an N-Triples IRI body, or ``None`` when it is not an absolute IRI and no ``base`` is given.

    An absolute IRI is kept, with the characters N-Triples forbids inside
    ``<...>`` (controls, space, ``<>"{}|^`\\``) percent-encoded as UTF-8.  A
    relative value (a bare id such as ``Q42`` or ``/m/0abc``) becomes ``base``
    followed by the value percent-encoded (``/``, ``:`` and the RFC 3986
    sub-delimiters kept).
    """
    from urllib.parse import quote

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    v = str(value).strip()
    if not v:
        return None
    if _SCHEME.match(v):
        return _NT_FORBIDDEN.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode("utf-8")), v)
    if base is None:
        return None
    return base + quote(v, safe="/:@!$&'()*+,;=-._~")


def write_ntriples(df, dest: Any, *, src_base: str | None = None, tgt_base: str | None = None,
                   predicate: str = OWL_SAME_AS, header: str | None = None) -> dict:
    """``<src> <owl:sameAs> <tgt> .`` per row, from ``src_uri`` / ``tgt_uri`` (falling back to the ids).

    A side whose value is not an absolute IRI is minted under ``src_base`` /
    ``tgt_base`` when given (see :func:`nt_iri`); otherwise the row is skipped
    and counted.  ``header``: an optional comment (``# ...`` lines).  Returns
    ``{"written", "skipped", "skipped_examples", "written_rows"}`` (``written_rows``:
    ``(len(df),)`` bool, the rows that became triples).
    """
    for name, b in (("source", src_base), ("target", tgt_base)):
        if b is not None and (not _SCHEME.match(b) or _NT_FORBIDDEN.search(b)):
            raise MmeaInputError(f"{name} base IRI {b!r} is not an absolute IRI (e.g. http://example.org/kg1/)")
    if not _SCHEME.match(predicate) or _NT_FORBIDDEN.search(predicate):
        raise MmeaInputError(f"predicate {predicate!r} is not an absolute IRI")

    def column(side: str):
        """The side's URI per row, its id where the URI is missing."""
        uri = df[f"{side}_uri"].tolist() if f"{side}_uri" in df else [None] * len(df)
        return [u if _plain(u) is not None and str(u).strip() else i for u, i in zip(uri, df[f"{side}_id"])]

    skipped, ok = [], np.zeros(len(df), bool)
    with _text_out(dest) as fh:
        if header:
            fh.write("".join(f"# {ln}\n" for ln in header.splitlines()))
        for r, (s, t) in enumerate(zip(column("src"), column("tgt"))):
            a, b = nt_iri(s, src_base), nt_iri(t, tgt_base)
            if a is None or b is None:
                skipped.append(s if a is None else t)
                continue
            fh.write(f"<{a}> <{predicate}> <{b}> .\n")
            ok[r] = True
    return {"written": int(ok.sum()), "skipped": len(skipped), "skipped_examples": [str(x) for x in skipped[:3]],
            "written_rows": ok}


# -- scoring an alignment file (mmea evaluate) ---------------------------------------

def _resolver(index: Any):
    """id -> key: a KnowledgeGraph (id or URI -> internal id), a mapping, or identity."""
    if index is None:
        return lambda k: k
    if hasattr(index, "index") and hasattr(index, "uri_index"):
        ids, uris = index.index, index.uri_index
        return lambda k: ids.get(k, uris.get(k))
    return lambda k: index.get(k)


def _resolve_all(keys: Sequence[str], lines: Sequence[int], index: Any, what: str, path) -> list:
    res = _resolver(index)
    out, bad = [], []
    for k, ln in zip(keys, lines):
        v = res(k)
        if v is None:
            bad.append((k, ln))
        out.append(v)
    if bad:
        shown = ", ".join(f"{k!r} (line {ln})" for k, ln in bad[:5])
        raise MmeaInputError(f"{path}: {len(bad)} unknown {what} id{'s' if len(bad) > 1 else ''}: {shown}"
                             + (", ..." if len(bad) > 5 else ""),
                             hint="check that the alignment and the gold links use this dataset's entity ids")
    return out


#: How ``ranking`` treats a gold target that is not among its source's candidates (also in docs/export.md).
MISSING_GOLD_POLICY = (
    "a gold target outside its source's candidate list is a miss at every k (hits@k) and adds 0 to mrr; "
    "mr is null unless every gold target is among the candidates: mr_found is the mean rank of the found "
    "ones, mr_lower_bound puts each missing one at its list length + 1 (the best rank it could have)")


def _candidate_lists(df, a_src: list, a_tgt: list) -> tuple[np.ndarray, dict]:
    """``(row order, {source: [targets best first]})``: by ``rank``, then ``score`` (desc), then file order."""
    rank = df["rank"].to_numpy(dtype=float, na_value=np.inf) if "rank" in df else np.full(len(df), np.inf)
    score = df["score"].to_numpy(dtype=float, na_value=np.nan) if "score" in df else np.zeros(len(df))
    score = np.where(np.isnan(score), -np.inf, score)
    order = np.lexsort((np.arange(len(df)), -score, rank))
    lists: dict[Any, list] = {}
    seen: set = set()
    for i in order.tolist():
        if (a_src[i], a_tgt[i]) not in seen:  # two ids resolving to one entity: keep the better-ranked row
            seen.add((a_src[i], a_tgt[i]))
            lists.setdefault(a_src[i], []).append(a_tgt[i])
    return order, lists


def candidate_ranking(lists: dict, gold_pairs: Sequence, ks: Sequence[int] = (1, 5, 10)) -> dict:
    """Ranking metrics of gold pairs against per-source candidate lists (see :data:`MISSING_GOLD_POLICY`).

    A gold target absent from its source's list (or a gold source with no list) is a
    miss at every ``k`` and contributes 0 to ``mrr``; ``mr`` is ``None`` then, with
    ``mr_found`` (mean rank of the found targets) and ``mr_lower_bound`` (each missing
    target at its list length + 1) alongside.  ``hits@k`` for ``k`` above a list's
    length can only undercount: the file does not say where a missing target ranks.
    """
    pos = {s: {t: i + 1 for i, t in reversed(list(enumerate(lst)))} for s, lst in lists.items()}
    found, lower = [], []
    pairs = list(dict.fromkeys(gold_pairs))
    for s, t in pairs:
        r = pos.get(s, {}).get(t)
        if r is not None:
            found.append(r)
        lower.append(r if r is not None else len(lists.get(s, [])) + 1)
    n, f = len(pairs), np.asarray(found, dtype=np.float64)
    out = {f"hits@{k}": float((f <= k).sum() / n) for k in ks}
    out["mrr"] = float((1.0 / f).sum() / n)
    out["mr"] = float(f.mean()) if len(f) == n else None
    out["mr_found"] = float(f.mean()) if len(f) else None
    out["mr_lower_bound"] = float(np.mean(lower))
    out.update({"gold_in_candidates": len(f) / n, "gold_found": len(f), "gold_missing": n - len(f),
                "num_gold_pairs": n, "max_candidates": max(len(v) for v in lists.values()),
                "missing_gold": MISSING_GOLD_POLICY})
    return out


def evaluate_alignment_file(alignment_csv: str | Path, gold_links_path: str | Path, *,
                            src_index: Any = None, tgt_index: Any = None,
                            ks: Sequence[int] = (1, 5, 10)) -> dict:
    """Score an alignment CSV against gold links (backs ``mmea evaluate --alignment FILE --gold LINKS``).

    Args:
        alignment_csv: see :func:`mmea.alignment_csv.read_alignment_file`.
        gold_links_path: ``src_id tgt_id`` per line (see :func:`read_gold_links`).
        src_index, tgt_index: optional :class:`~mmea.data.graph.KnowledgeGraph`
            (ids or URIs accepted) or ``{id: key}`` mappings; every id in both
            files must resolve, else :class:`MmeaInputError` lists the first few.
            Without them ids are compared as strings, and an alignment sharing no
            source id with the gold links is an error.

    Returns:
        ``hits@1``, ``precision``, ``recall``, ``f1``, ``coverage`` of each
        source's prediction (its ``matched`` row if that column exists, else its
        best-ranked row: by ``rank``, then ``score``, then file order), counts,
        ``format`` (what was read: header or not, columns, skipped lines, see
        :class:`~mmea.alignment_csv.AlignmentFormat`), ``warnings``, and ``ranking``
        (:func:`candidate_ranking`) when some source has several candidates.
    """
    from .evaluation import alignment_metrics
    from .runs import check_run_alignment

    check_run_alignment(alignment_csv)  # a run's own alignment.csv: only from a finished, unedited run
    df, fmt = read_alignment_file(alignment_csv)
    gold_rows = read_gold_links(gold_links_path)
    lines = df["_line"].tolist()
    a_src = _resolve_all(df["src_id"].tolist(), lines, src_index, "source",
                         alignment_csv) if src_index is not None else df["src_id"].tolist()
    a_tgt = _resolve_all(df["tgt_id"].tolist(), lines, tgt_index, "target",
                         alignment_csv) if tgt_index is not None else df["tgt_id"].tolist()
    g_lines = [g[0] for g in gold_rows]
    g_src = _resolve_all([g[1] for g in gold_rows], g_lines, src_index, "source",
                         gold_links_path) if src_index is not None else [g[1] for g in gold_rows]
    g_tgt = _resolve_all([g[2] for g in gold_rows], g_lines, tgt_index, "target",
                         gold_links_path) if tgt_index is not None else [g[2] for g in gold_rows]
    if not set(g_src).intersection(a_src):
        example = ", ".join(repr(x) for x in list(dict.fromkeys(df["src_id"]))[:3])
        raise MmeaInputError(
            f"{alignment_csv}: none of its {len(set(a_src))} source ids appears in the gold links "
            f"{gold_links_path} (e.g. {example})",
            hint="are both files using the same entity ids (or URIs)?")
    order, lists = _candidate_lists(df, a_src, a_tgt)
    if "matched" in df:
        matched = df["matched"].fillna(False).to_numpy(dtype=bool)
        pred = list(dict((a_src[i], a_tgt[i]) for i in order.tolist()[::-1] if matched[i]).items())
    else:
        pred = [(s, lst[0]) for s, lst in lists.items()]
    gold_pairs = list(zip(g_src, g_tgt))
    out = {
        "alignment": str(alignment_csv),
        "gold": str(gold_links_path),
        "num_rows": int(len(df)),
        "num_sources": len(lists),
        "num_gold_links": len(set(gold_pairs)),
        **alignment_metrics(pred, gold_pairs),
        "format": fmt.to_dict(),
        "warnings": list(fmt.warnings),
    }
    if max(len(v) for v in lists.values()) > 1:
        out["ranking"] = candidate_ranking(lists, gold_pairs, ks)
        miss = out["ranking"]["gold_missing"]
        if miss:
            out["warnings"].append(
                f"{miss} of {out['ranking']['num_gold_pairs']} gold targets are not among their source's "
                f"candidates (at most {out['ranking']['max_candidates']} per source): misses at every k")
    return out


# -- export of a run (mmea export) -------------------------------------------------

def _output_error(dest: Path, e: OSError) -> MmeaError:
    """An error naming the output file: bad path -> input error (exit 2), a failing disk -> exit 1."""
    import errno

    why = {errno.EACCES: "permission denied", errno.EPERM: "permission denied", errno.EISDIR: "it is a directory",
           errno.ENOTDIR: "a parent of it is not a directory", errno.ENOENT: "its folder cannot be created",
           errno.EEXIST: "a parent of it is a file", errno.EROFS: "read-only file system"}.get(e.errno)
    hint = "choose another --out (or - for stdout)"
    if why is not None:
        return MmeaInputError(f"{dest}: cannot write the export ({why})", hint=hint)
    return MmeaError(f"{dest}: cannot write the export ({e.strerror or e})", hint=hint)


def _write_export(selected, dest: Any, fmt: str, *, header: str, src_base: str | None, tgt_base: str | None):
    """Write ``selected`` as ``fmt`` to a path (atomically) or a stream; ``nt`` returns its counts."""
    from .runs import atomic_path

    def write(target):
        if fmt == "csv":
            return write_csv(selected, target)
        if fmt == "jsonl":
            return write_jsonl(selected, target)
        return write_ntriples(selected, target, src_base=src_base, tgt_base=tgt_base, header=header)

    if hasattr(dest, "write"):
        out = write(dest)
        return out if fmt == "nt" else None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dest) as tmp:
            out = write(tmp)
    except OSError as e:
        raise _output_error(dest, e) from None
    return out if fmt == "nt" else None


def _check_export_options(min_precision, fmt: str, topk: int) -> None:
    if min_precision is not None and not (0.0 < float(min_precision) <= 1.0):
        raise MmeaInputError(f"--min-precision must be in (0, 1], got {min_precision}")
    if int(topk) < 1:
        raise MmeaInputError(f"--topk must be >= 1, got {topk}")
    if fmt not in ("csv", "jsonl", "nt"):
        raise MmeaInputError(f"unknown export format {fmt!r}; valid choices: csv, jsonl, nt")
    if fmt == "nt" and topk > 1:
        raise MmeaInputError("--format nt asserts owl:sameAs, so it takes one target per source",
                             hint="use --topk 1 with nt, or csv/jsonl for alternatives")


def export_run(run_dir: str | Path, *, min_precision: float | None = None, fmt: str = "csv",
               out: str | Path | None = None, topk: int = 1, feature: str | None = None,
               src_base_iri: str | None = None, tgt_base_iri: str | None = None, stream: Any = None) -> dict:
    """Export a finished run's predicted pairs with ``est_precision`` (backs ``mmea export RUN_DIR``).

    Reads ``RUN_DIR/alignment.csv`` and ``calibration.json``
    (:func:`~mmea.calibration.calibrated_alignment`), keeps the pairs meeting
    ``min_precision`` (:func:`~mmea.calibration.select_pairs`) and writes them as
    ``fmt`` (``csv``, ``jsonl`` or ``nt``) to ``out``: a path (written atomically),
    ``"-"`` for ``stream``, or ``None`` for ``RUN_DIR/export[-pP].<fmt>``.

    Returns the summary of :func:`~mmea.calibration.export_summary` plus ``run_dir``,
    ``out``, ``format``, ``min_precision``, ``topk``, ``read`` (what was read from
    ``alignment.csv``, see :class:`~mmea.alignment_csv.AlignmentFormat`), ``warnings``
    and, for N-Triples, ``nt_skipped`` / ``nt_skipped_examples``.
    """
    from .calibration import CALIBRATION_FILE, calibrated_alignment, export_summary, select_pairs
    from .runs import check_complete

    _check_export_options(min_precision, fmt, topk)
    run = Path(run_dir)
    if not run.is_dir():
        raise MmeaInputError(f"{run}: run directory not found", hint="pass a directory written by mmea align")
    check_complete(run)  # mmea.runs' completion record: an interrupted, failed or edited run is refused
    cal_path = run / CALIBRATION_FILE
    if min_precision is not None and not cal_path.is_file():
        raise MmeaInputError(f"{cal_path}: file not found, so --min-precision cannot be applied",
                             hint="re-run mmea align (runs made before calibration existed have none)")
    df, cal = calibrated_alignment(run, feature=feature)
    if min_precision is not None and not cal.available:
        raise MmeaInputError(f"{cal_path}: no calibration ({cal.reason}), so --min-precision cannot be applied",
                             hint="align with gold seeds (e.g. mmea align --seed-ratio 0.3) so that validation "
                                  "links exist, or export without --min-precision")
    selected = select_pairs(df, min_precision, topk)
    if out == "-":
        dest = stream
    else:
        dest = Path(out) if out else run / (f"export-p{min_precision:g}.{fmt}" if min_precision else f"export.{fmt}")
    what = f"est_precision >= {min_precision:g}" if min_precision else "every predicted pair"
    nt = _write_export(selected, dest, fmt, header=f"mmea export of {run}: owl:sameAs, {what}",
                       src_base=src_base_iri, tgt_base=tgt_base_iri)
    if nt is not None:
        selected = selected.loc[nt["written_rows"]]
    summary = export_summary(df, selected, cal)
    read: AlignmentFormat | None = df.attrs.get("alignment_format")
    summary.update({"run_dir": str(run), "out": "-" if out == "-" else str(dest), "format": fmt,
                    "min_precision": min_precision, "topk": topk,
                    "read": read.to_dict() if read else None, "warnings": list(read.warnings) if read else []})
    if nt is not None:
        summary.update({"nt_skipped": nt["skipped"], "nt_skipped_examples": nt["skipped_examples"]})
    return summary


def add_uncertainty(df, task, model):
    """``df`` with an ``uncertainty`` column when ``model`` has :meth:`uncertainty` (``gaussian-strong``).

    A pair's uncertainty is the mean common-space variance of its source plus that of its target (larger: less
    sure); the frame is returned unchanged for models without variances.
    """
    if getattr(model, "uncertainty", None) is None or not len(df):
        return df
    s_row = {k: i for i, k in enumerate(task.source.ids)}
    t_row = {k: i for i, k in enumerate(task.target.ids)}
    src = np.fromiter((s_row[k] for k in df["src_id"]), dtype=np.int64, count=len(df))
    tgt = np.fromiter((t_row[k] for k in df["tgt_id"]), dtype=np.int64, count=len(df))
    df["uncertainty"] = pair_uncertainty(model, src, tgt)
    return df


def pair_uncertainty(model, src: np.ndarray, tgt: np.ndarray) -> np.ndarray | None:
    """``(n,)`` float32 uncertainty of the pairs (``src[i]``, ``tgt[i]``) (internal rows; a target ``-1``: NaN):
    the source's mean common-space variance plus the target's; ``None`` for a model without variances."""
    get = getattr(model, "uncertainty", None)
    if get is None:
        return None
    u_s, u_t = (np.asarray(u, np.float64) for u in get())
    tgt = np.asarray(tgt, np.int64)
    return np.where(tgt >= 0, u_s[np.asarray(src, np.int64)] + u_t[np.maximum(tgt, 0)], np.nan).astype(np.float32)
