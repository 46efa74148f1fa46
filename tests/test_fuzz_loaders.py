"""Property-based fuzzing of the TSV and DBP15k loaders (issue 19).

A valid base folder is corrupted at random (field counts, encodings, byte-order
marks, control characters, id collisions, truncation, a directory in place of a
file, duplicated lines, CRLF line ends) and loaded.  Every outcome must be one
of:

* an input error (:class:`~mmea.errors.MmeaInputError`, CLI exit 2) whose
  message names a file of the folder, with a line number inside that file when
  it gives one;
* a successful load whose entity sets are exactly the base ones (nothing
  invented, nothing lost) -- except that a new entity is accepted when a
  warning of the load report names it (without ``entities.tsv`` any string is
  an entity: ``b:nan tes`` in triples.tsv is a new entity, which the report
  lists among the entities without a name; one only in names.tsv is listed as
  in no triple).  A duplicated data line must be counted as skipped.  Corruptions that must not change
  anything (a leading BOM, CRLF line ends) must load to the same entities,
  names and links.

Any other exception (a traceback) fails the test.  The default suite runs a few
hundred examples per layout; the ``slow`` variants run thousands.  A handful of
cases go through the CLI (``mmea datasets info DIR``) for the exit code and the
message.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mmea.data.loaders import LOADERS, LoadOptions, detect_loader  # noqa: E402
from mmea.errors import DataFormatError, MmeaInputError  # noqa: E402

BOM = b"\xef\xbb\xbf"
DEFAULT_EXAMPLES = 200  # per layout (400 in all); the default fuzz tests take about 5 s
SLOW_EXAMPLES = 2500


# ---------------------------------------------------------------------------
# base folders (file path -> bytes)
# ---------------------------------------------------------------------------

def _tsv(rows) -> bytes:
    return "".join("\t".join(r) + "\n" for r in rows).encode("utf-8")


CITIES = ["paris", "lyon", "nice", "lille", "nantes", "brest"]


def tsv_base() -> dict[str, bytes]:
    """kg1 with entities.tsv (the entity set is fixed); kg2 without (entities by first appearance,
    names.tsv names every one of them)."""
    a = [f"a:{c}" for c in CITIES]
    b = [f"b:{c}" for c in CITIES]
    return {
        "kg1/entities.tsv": _tsv((e, f"http://a.org/{c.title()}") for e, c in zip(a, CITIES)),
        "kg1/triples.tsv": b"# head\trelation\ttail\n" + _tsv((x, "next", y) for x, y in zip(a, a[1:])),
        "kg1/names.tsv": _tsv((e, c.title()) for e, c in zip(a, CITIES)),
        "kg1/attributes.tsv": _tsv([(a[0], "population", "2,100,000"), (a[1], "founded", "43 BC")]),
        "kg2/triples.tsv": _tsv((x, "near", y) for x, y in zip(b, b[1:])),
        "kg2/names.tsv": _tsv((e, f"Ville de {c.title()}") for e, c in zip(b, CITIES)),
        "links.tsv": _tsv(zip(a, b)),
    }


ZH = "http://zh.dbpedia.org/resource/"
EN = "http://dbpedia.org/resource/"


def dbp_base() -> dict[str, bytes]:
    """DBP15k/zh_en (ids 0..5 and 10..15, every entity linked) and its translated names."""
    n = len(CITIES)
    names = [[i, ["tr", c]] for i, c in enumerate(CITIES)] + [[10 + i, [c]] for i, c in enumerate(CITIES)]
    return {
        "DBP15k/zh_en/ent_ids_1": _tsv((str(i), ZH + c) for i, c in enumerate(CITIES)),
        "DBP15k/zh_en/ent_ids_2": _tsv((str(10 + i), EN + c.title()) for i, c in enumerate(CITIES)),
        "DBP15k/zh_en/triples_1": _tsv((str(i), str(i % 2), str(i + 1)) for i in range(n - 1)),
        "DBP15k/zh_en/triples_2": _tsv((str(10 + i), "7", str(11 + i)) for i in range(n - 1)),
        "DBP15k/zh_en/cleaned_rel_ids_1": _tsv([("0", "capital"), ("1", "leader")]),
        "DBP15k/zh_en/ref_ent_ids": _tsv((str(i), str(10 + i)) for i in range(n)),
        "DBP15k/translated_ent_name/dbp_zh_en.json": json.dumps(names).encode("utf-8"),
    }


LAYOUTS = {"tsv": (tsv_base, "."), "dbp15k": (dbp_base, "DBP15k/zh_en")}


# ---------------------------------------------------------------------------
# corruptions
# ---------------------------------------------------------------------------

#: characters no id may hold (a NUL, C0/C1 controls, DEL, a BOM inside a line) and a few harmless ones
ODD_CHARS = ["\x00", "\x01", "\x08", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f", "\x85", "\r", "\ufeff", "\t", " ",
             "é", "\u00a0"]
BAD_BYTES = [b"\xff", b"\xfe", b"\xc3", b"\xe9", b"\x80", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]


@dataclass(frozen=True)
class Corruption:
    kind: str
    file: str
    pos: float = 0.0  # where, as a fraction of the file
    extra: object = None

    def __repr__(self) -> str:  # shown by hypothesis on failure
        return f"Corruption({self.kind!r}, {self.file!r}, pos={self.pos:.3f}, extra={self.extra!r})"


#: corruptions after which the load must succeed with the same entities, names and links
PRESERVING = {"bom_start", "crlf"}


def corruptions(files: list[str]):
    """A strategy of :class:`Corruption` over ``files``."""
    f = st.sampled_from(files)
    pos = st.floats(0, 1, allow_nan=False)
    return st.one_of(
        st.builds(Corruption, st.just("bom_start"), f),
        st.builds(Corruption, st.just("crlf"), f),
        st.builds(Corruption, st.just("insert_char"), f, pos, st.sampled_from(ODD_CHARS)),
        st.builds(Corruption, st.just("insert_bytes"), f, pos, st.sampled_from(BAD_BYTES)),
        st.builds(Corruption, st.just("reencode"), f, st.just(0.0), st.sampled_from(["utf-16", "latin-1", "cp1252"])),
        st.builds(Corruption, st.just("add_tab"), f, pos),
        st.builds(Corruption, st.just("drop_tab"), f, pos),
        st.builds(Corruption, st.just("truncate"), f, pos),
        st.builds(Corruption, st.just("empty"), f),
        st.builds(Corruption, st.just("directory"), f),
        st.builds(Corruption, st.just("dup_line"), f, pos),
        st.builds(Corruption, st.just("collide"), f, pos, st.floats(0, 1, allow_nan=False)),
        st.builds(Corruption, st.just("cross_collide"), f, pos, st.floats(0, 1, allow_nan=False)),
    )


def _line_bounds(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every line without its newline."""
    out, start = [], 0
    for i, b in enumerate(data):
        if b == 10:
            out.append((start, i))
            start = i + 1
    if start < len(data):
        out.append((start, len(data)))
    return out


def _pick_line(data: bytes, pos: float) -> tuple[int, int] | None:
    lines = _line_bounds(data)
    return lines[min(int(pos * len(lines)), len(lines) - 1)] if lines else None


def apply(c: Corruption, files: dict[str, bytes | None], base: dict[str, bytes]) -> None:
    """Apply ``c`` to ``files`` in place (``None`` = a directory in place of the file)."""
    data = files[c.file]
    assert data is not None
    at = int(c.pos * len(data))
    if c.kind == "bom_start":
        files[c.file] = BOM + data
    elif c.kind == "crlf":
        files[c.file] = data.replace(b"\n", b"\r\n")
    elif c.kind == "insert_char":
        files[c.file] = data[:at] + str(c.extra).encode("utf-8") + data[at:]
    elif c.kind == "insert_bytes":
        files[c.file] = data[:at] + c.extra + data[at:]
    elif c.kind == "reencode":
        files[c.file] = data.decode("utf-8", errors="replace").encode(str(c.extra), errors="replace")
    elif c.kind in ("add_tab", "drop_tab"):
        tabs = [i for i, b in enumerate(data) if b == 9]
        if c.kind == "add_tab":
            files[c.file] = data[:at] + b"\t" + data[at:]
        elif tabs:
            j = tabs[min(int(c.pos * len(tabs)), len(tabs) - 1)]
            files[c.file] = data[:j] + data[j + 1:]
    elif c.kind == "truncate":
        files[c.file] = data[:at]
    elif c.kind == "empty":
        files[c.file] = b""
    elif c.kind == "directory":
        files[c.file] = None
    elif c.kind == "dup_line":
        span = _pick_line(data, c.pos)
        if span:
            files[c.file] = data[:span[1]] + b"\n" + data[span[0]:span[1]] + data[span[1]:]
    elif c.kind in ("collide", "cross_collide"):
        _collide(c, files, base)


def _first_field(data: bytes, span: tuple[int, int]) -> tuple[int, int]:
    line = data[span[0]:span[1]]
    m = re.match(rb"[^\t ]*", line)
    return span[0], span[0] + (m.end() if m else 0)


def _collide(c: Corruption, files: dict[str, bytes | None], base: dict[str, bytes]) -> None:
    """Give a line the first field (the id) of another line: of the same file (``collide``), or of the
    same-named file of the other KG (``cross_collide``: ``ent_ids_2`` takes an ``ent_ids_1`` id)."""
    data = files[c.file]
    other_name = c.file
    if c.kind == "cross_collide":
        other_name = (c.file.replace("_2", "_1") if c.file.endswith("_2") else c.file.replace("_1", "_2")) \
            if "/zh_en/" in c.file else c.file.replace("kg1/", "kg2/") if "kg1/" in c.file else \
            c.file.replace("kg2/", "kg1/")
    donor = base.get(other_name) or data
    target, source = _pick_line(data, c.pos), _pick_line(donor, float(c.extra))
    if not target or not source:
        return
    t0, t1 = _first_field(data, target)
    s0, s1 = _first_field(donor, source)
    files[c.file] = data[:t0] + donor[s0:s1] + data[t1:]


# ---------------------------------------------------------------------------
# running one case and the oracle
# ---------------------------------------------------------------------------

def write_files(root: Path, files: dict[str, bytes | None]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            p.mkdir()
            (p / "stray.txt").write_text("a directory where a file belongs\n")
        else:
            p.write_bytes(data)


def load_folder(folder: Path):
    return LOADERS.make(detect_loader(folder)).load(folder, LoadOptions())


def summary(task) -> dict:
    rep = task.meta["load_report"]
    return {"ids": (set(task.source.ids), set(task.target.ids)),
            "names": (list(task.source.names), list(task.target.names)),
            "links": sorted(map(tuple, task.all_links.tolist())),
            "skipped": sum(rep["skipped"].values()), "warnings": rep["warnings"]}


_BASES: dict[str, dict] = {}


def base_summary(layout: str) -> dict:
    if layout not in _BASES:
        make, sub = LAYOUTS[layout]
        with tempfile.TemporaryDirectory() as d:
            write_files(Path(d), make())
            _BASES[layout] = summary(load_folder(Path(d) / sub))
    return _BASES[layout]


def check_error(e: MmeaInputError, root: Path, cs: list[Corruption]) -> None:
    """The error names a file of the folder (and a line inside it when it gives one); it is not
    caused by a harmless corruption, and a lone directory corruption is named exactly."""
    damaging = [c for c in cs if c.kind not in PRESERVING]
    assert damaging, f"{cs} must load: {e}"
    assert str(root) in str(e), f"{cs}: the message names no file of the folder: {e}"
    if isinstance(e, DataFormatError):
        path = Path(e.path)
        assert str(path).startswith(str(root)), (cs, str(e))
        if e.line_no is not None and path.is_file():
            n_lines = path.read_bytes().count(b"\n") + 1
            assert 1 <= e.line_no <= n_lines, (cs, str(e))
    if len(damaging) == 1 and damaging[0].kind == "directory":
        assert isinstance(e, DataFormatError) and e.path == str(root / damaging[0].file), (cs, str(e))


def check_success(got: dict, base: dict, root: Path, cs: list[Corruption], base_files: dict[str, bytes]) -> None:
    """Same entities as the base, unless the report shows why (see the module docstring)."""
    damaging = [c for c in cs if c.kind not in PRESERVING]
    if not damaging:
        assert got["ids"] == base["ids"] and got["names"] == base["names"] and got["links"] == base["links"], cs
        return
    for side in (0, 1):
        lost = base["ids"][side] - got["ids"][side]
        assert not lost, f"{cs}: loaded with entities lost: {lost}"
        for e in got["ids"][side] - base["ids"][side]:  # new: a warning must name it
            assert not re.search("[\x00-\x08\x0a-\x1f\x7f-\x9f\ufeff]", e), f"{cs}: entity {e!r} holds a control character"
            assert any(repr(e) in w for w in got["warnings"]), \
                f"{cs}: loaded with a new entity {e!r} that no warning names: {got['warnings']}"
    if len(cs) == 1 and cs[0].kind == "dup_line":  # a repeated data line is counted as skipped
        span = _pick_line(base_files[cs[0].file], cs[0].pos)
        line = base_files[cs[0].file][span[0]:span[1]] if span else b""
        if line.strip() and not line.startswith(b"#"):
            assert got["skipped"] > base["skipped"], (cs, got["skipped"], base["skipped"])


def run_case(layout: str, cs: list[Corruption]) -> None:
    """Write the base folder with the corruptions ``cs`` applied, load it, check the outcome."""
    make, sub = LAYOUTS[layout]
    base_files = make()
    files: dict[str, bytes | None] = dict(base_files)
    for c in cs:
        if files[c.file] is not None:
            apply(c, files, base_files)
    base = base_summary(layout)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        write_files(root, files)
        try:
            task = load_folder(root / sub)
        except MmeaInputError as e:
            check_error(e, root, cs)
            return
        check_success(summary(task), base, root, cs, base_files)


def cases(layout: str):
    """One or two corruptions (often a harmless BOM / CRLF one first) of the layout's files."""
    names = sorted(LAYOUTS[layout][0]())
    # unique (kind, file): a second BOM or a second CRLF pass is damage, not one of the harmless kinds
    return st.lists(corruptions(names), min_size=1, max_size=2, unique_by=lambda c: (c.kind, c.file))


FUZZ = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            database=None)


@settings(max_examples=DEFAULT_EXAMPLES, **FUZZ)
@given(cs=cases("tsv"))
def test_fuzz_tsv_layout(cs):
    run_case("tsv", cs)


@settings(max_examples=DEFAULT_EXAMPLES, **FUZZ)
@given(cs=cases("dbp15k"))
def test_fuzz_dbp15k_layout(cs):
    run_case("dbp15k", cs)


@pytest.mark.slow
@settings(max_examples=SLOW_EXAMPLES, **FUZZ)
@given(cs=cases("tsv"))
def test_fuzz_tsv_layout_many(cs):
    run_case("tsv", cs)


@pytest.mark.slow
@settings(max_examples=SLOW_EXAMPLES, **FUZZ)
@given(cs=cases("dbp15k"))
def test_fuzz_dbp15k_layout_many(cs):
    run_case("dbp15k", cs)


# ---------------------------------------------------------------------------
# the preserving corruptions alone, on every file (deterministic)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("kind", sorted(PRESERVING))
def test_bom_and_crlf_change_nothing_in_any_file(layout, kind):
    for name in sorted(LAYOUTS[layout][0]()):
        run_case(layout, [Corruption(kind, name)])


# ---------------------------------------------------------------------------
# through the CLI: exit code 2, file (and line) named
# ---------------------------------------------------------------------------

CLI_CASES = [
    ("tsv", Corruption("insert_char", "kg2/triples.tsv", 0.5, "\x00"), "kg2/triples.tsv", True),
    ("tsv", Corruption("directory", "links.tsv"), "links.tsv", False),
    ("tsv", Corruption("directory", "kg1/names.tsv"), "kg1/names.tsv", False),
    ("tsv", Corruption("empty", "kg2/triples.tsv"), "kg2/triples.tsv", False),
    ("tsv", Corruption("insert_bytes", "kg1/names.tsv", 0.4, b"\xff"), "kg1/names.tsv", True),
    ("dbp15k", Corruption("cross_collide", "DBP15k/zh_en/ent_ids_2", 0.0, 0.3), "ent_ids_2", True),
    ("dbp15k", Corruption("directory", "DBP15k/zh_en/ref_ent_ids"), "ref_ent_ids", False),
    ("dbp15k", Corruption("insert_char", "DBP15k/zh_en/triples_1", 0.5, "\x00"), "triples_1", True),
    ("dbp15k", Corruption("empty", "DBP15k/zh_en/triples_2"), "triples_2", False),
]


@pytest.mark.parametrize("layout,c,named,has_line", CLI_CASES, ids=[f"{x[0]}-{x[1].kind}-{x[2]}" for x in CLI_CASES])
def test_cli_exit_2_names_file_and_line(tmp_path, layout, c, named, has_line):
    from click.testing import CliRunner

    from mmea.cli import main

    make, sub = LAYOUTS[layout]
    base = make()
    files: dict[str, bytes | None] = dict(base)
    apply(c, files, base)
    write_files(tmp_path, files)
    r = CliRunner().invoke(main, ["datasets", "info", str(tmp_path / sub)])
    out = r.output + (r.stderr if r.stderr_bytes is not None else "")
    assert r.exit_code == 2, out
    assert "Traceback" not in out and named in out, out
    if has_line:
        assert re.search(r", line \d+:", out), out


def test_base_folders_load_cleanly():
    for layout in LAYOUTS:
        got = base_summary(layout)
        assert len(got["ids"][0]) == len(CITIES) and len(got["links"]) == len(CITIES)
