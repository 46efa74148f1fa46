"""Dataset catalog: names -> folders, resolution order, download with checksums.

Resolution order for a catalogued dataset's folder:

1. ``--data-dir`` / ``$MMEA_DATA_DIR``;
2. the cache, ``$MMEA_HOME/datasets`` (``MMEA_HOME`` defaults to ``~/.cache/mmea``);
3. download from the public source into the cache (``mmea datasets download NAME``
   or ``download=True``), each file checked against its git blob SHA-1.

Offline and not found, :class:`~mmea.errors.DatasetNotFoundError` says which
files were expected where and how to supply them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..errors import DatasetNotFoundError, MmeaInputError
from ..home import mmea_home  # noqa: F401  (re-exported: mmea.data.catalog.mmea_home)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger("mmea.data")

CATALOG_PATH = Path(__file__).resolve().parents[2] / "datasets" / "catalog.toml"


@dataclass(frozen=True)
class CatalogFile:
    path: str
    url: str
    git_blob: str
    size: int
    archive_member: str | None = None


@dataclass(frozen=True)
class CatalogEntry:
    """One pair or link-prediction dataset of the catalog."""

    name: str
    kind: str  # "pair" | "linkpred"
    description: str
    loader: str
    path: str = ""
    src: str = ""
    tgt: str = ""
    pair: str | None = None
    default_seed_ratio: float | None = None
    generated: bool = False
    selectable_only_by_name: bool = False
    files: tuple[CatalogFile, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Catalog:
    kgs: dict
    entries: dict

    def pairs(self) -> list[CatalogEntry]:
        return [e for e in self.entries.values() if e.kind == "pair"]

    def get(self, name: str) -> CatalogEntry:
        if name in self.entries:
            return self.entries[name]
        # a KG name stands for the first pair that has it
        for e in self.entries.values():
            if name in (e.src, e.tgt) and not e.selectable_only_by_name:
                return e
        if name == "fb15k237":
            return self.entries["fb15k237"]
        raise MmeaInputError(f"unknown dataset {name!r}; known: {', '.join(sorted([*self.entries, *self.kgs]))}",
                             hint="`mmea datasets list` shows the catalog; a folder path also works")

    def find_pair(self, src: str, tgt: str) -> tuple[CatalogEntry, bool]:
        """The pair entry for ``--src SRC --tgt TGT`` and whether the sides are swapped."""
        for e in self.pairs():
            if e.selectable_only_by_name:
                continue
            if (e.src, e.tgt) == (src, tgt):
                return e, False
            if (e.src, e.tgt) == (tgt, src):
                return e, True
        for name in (src, tgt):
            if name not in self.kgs:
                raise MmeaInputError(f"unknown KG {name!r}; catalog names: {', '.join(sorted(self.kgs))}",
                                     hint="or give a folder: --pair DIR, or --src DIR1 --tgt DIR2 (TSV layout)")
        valid = ", ".join(f"--src {e.src} --tgt {e.tgt}" for e in self.pairs() if not e.selectable_only_by_name)
        raise MmeaInputError(f"no benchmark pairs {src!r} with {tgt!r}; valid pairs: {valid}")


@lru_cache(maxsize=1)
def load_catalog(path: str | None = None) -> Catalog:
    p = Path(path) if path else CATALOG_PATH
    if not p.is_file():
        raise DatasetNotFoundError(f"dataset catalog not found at {p}",
                                   hint="run mmea from a checkout of the repository (pip install -e .)")
    raw = tomllib.loads(p.read_text(encoding="utf-8"))
    entries = {}
    for kind in ("pair", "linkpred"):
        for name, d in raw.get(kind, {}).items():
            files = tuple(CatalogFile(**f) for f in d.get("files", []))
            kw = {k: v for k, v in d.items() if k != "files"}
            entries[name] = CatalogEntry(name=name, kind=kind, files=files, **kw)
    return Catalog(kgs=raw.get("kg", {}), entries=entries)


def candidate_roots(data_dir: str | Path | None) -> list[tuple[str, Path]]:
    """Where a catalogued dataset is looked for, in order, with the reason."""
    roots = []
    if data_dir:
        roots.append(("--data-dir", Path(data_dir).expanduser()))
    env = os.environ.get("MMEA_DATA_DIR")
    if env:
        roots.append(("$MMEA_DATA_DIR", Path(env).expanduser()))
    roots.append(("cache ($MMEA_HOME/datasets)", mmea_home() / "datasets"))
    return roots


def _missing(entry: CatalogEntry, root: Path) -> list[str]:
    if entry.files:
        return [f.path for f in entry.files if not (root / f.path).is_file()]
    return [] if (root / entry.path).is_dir() else [entry.path + "/"]


def locate(entry: CatalogEntry, data_dir: str | Path | None = None, download: bool = False) -> Path:
    """The data root holding every file of ``entry`` (see module docstring for the order)."""
    tried = []
    for why, root in candidate_roots(data_dir):
        miss = _missing(entry, root)
        if not miss:
            return root
        tried.append((why, root, miss))
    if download:
        root = mmea_home() / "datasets"
        download_entry(entry, root)
        return root
    lines = [f"dataset {entry.name!r} not found."]
    for why, root, miss in tried:
        shown = ", ".join(miss[:4]) + (f" and {len(miss) - 4} more" if len(miss) > 4 else "")
        lines.append(f"  {why}: {root} lacks {shown}")
    raise DatasetNotFoundError(
        "\n".join(lines),
        hint=(f"point --data-dir (or MMEA_DATA_DIR) at a folder holding {entry.path}/, "
              f"or run `mmea datasets download {entry.name}` on a machine with internet access "
              f"and copy {mmea_home() / 'datasets'} here"))


def git_blob_sha1(data: bytes) -> str:
    """SHA-1 of a git blob (what `git hash-object` prints) for ``data``."""
    h = hashlib.sha1()
    h.update(b"blob %d\0" % len(data))
    h.update(data)
    return h.hexdigest()


def _fetch(url: str, timeout: float = 30.0) -> bytes:
    import urllib.request

    from tqdm.auto import tqdm

    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - public dataset sources
        total = int(r.headers.get("Content-Length") or 0) or None
        chunks = []
        with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1],
                  disable=not sys.stderr.isatty()) as bar:
            while True:
                b = r.read(1 << 20)
                if not b:
                    break
                chunks.append(b)
                bar.update(len(b))
    return b"".join(chunks)


def download_entry(entry: CatalogEntry, root: Path) -> list[str]:
    """Download the missing files of ``entry`` into ``root``; verify each checksum."""
    import io
    import tarfile

    if entry.generated:
        return []
    got = []
    archives: dict[str, bytes] = {}
    for f in entry.files:
        dest = root / f.path
        if dest.is_file() and git_blob_sha1(dest.read_bytes()) == f.git_blob:
            continue
        try:
            if f.archive_member:
                if f.url not in archives:
                    archives[f.url] = _fetch(f.url)
                with tarfile.open(fileobj=io.BytesIO(archives[f.url])) as tar:
                    member = next((m for m in tar.getmembers() if m.name.rsplit("/", 1)[-1] == f.archive_member),
                                  None)
                    if member is None:
                        raise DatasetNotFoundError(f"{f.url} has no member {f.archive_member}")
                    data = tar.extractfile(member).read()
            else:
                data = _fetch(f.url)
        except OSError as e:
            raise DatasetNotFoundError(
                f"could not download {f.url} ({e})",
                hint=f"offline? copy the files of {entry.path}/ into --data-dir or {root}") from None
        if git_blob_sha1(data) != f.git_blob:
            raise DatasetNotFoundError(f"checksum mismatch for {f.url}: expected git blob {f.git_blob}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(dest.suffix + ".part")
        tmp.write_bytes(data)
        tmp.replace(dest)
        got.append(f.path)
    return got


def load_pair_task(src: str | None, tgt: str | None, *, pair: str | None = None, links: str | None = None,
                   data_dir: str | None = None, seed_ratio: float | None = None, seed: int = 0,
                   valid_ratio: float = 0.1, use_dataset_split: bool = False, fold: int = 1,
                   download: bool = False, progress: bool = False, fb15k_triples: str = "union"):
    """Load an :class:`~mmea.data.AlignmentTask` from catalog names or folders.

    * ``pair`` a folder in any supported layout (auto-detected) or a catalog pair name;
    * ``src`` / ``tgt`` two TSV KG folders, or two catalog KG names (``dbp_zh``, ``dbp_en``).

    ``progress``: a bar of the bytes read (:func:`~mmea.data.parsing.loading_bar`) when stderr is a terminal.
    """
    from .parsing import loading_bar

    with loading_bar(progress, desc="loading"):
        return _load_pair_task(src, tgt, pair=pair, links=links, data_dir=data_dir, seed_ratio=seed_ratio,
                               seed=seed, valid_ratio=valid_ratio, use_dataset_split=use_dataset_split, fold=fold,
                               download=download, fb15k_triples=fb15k_triples)


def load_task_from_config(data, seed: int, progress: bool = False):
    """:func:`load_pair_task` with every option of a run's ``[data]`` section (``data``: the
    :class:`~mmea.config.DataConfig`): the one place the section becomes loader arguments, so no
    command forgets one (``valid_ratio``, ``fb15k_triples``, ...)."""
    d = data
    return load_pair_task(d.src or None, d.tgt or None, pair=d.pair, links=d.links, data_dir=d.data_dir,
                          seed_ratio=d.seed_ratio, seed=seed, valid_ratio=d.valid_ratio,
                          use_dataset_split=d.use_dataset_split, fold=d.fold, progress=progress,
                          fb15k_triples=d.fb15k_triples)


def _load_pair_task(src, tgt, *, pair, links, data_dir, seed_ratio, seed, valid_ratio, use_dataset_split, fold,
                    download, fb15k_triples="union"):
    """The body of :func:`load_pair_task`."""
    from .loaders import LOADERS, LoadOptions, detect_loader

    t0 = time.perf_counter()
    catalog = load_catalog()
    opts = dict(seed_ratio=seed_ratio, seed=seed, valid_ratio=valid_ratio, use_dataset_split=use_dataset_split,
                fold=fold, extra={"fb15k_triples": fb15k_triples})  # MMKG: which FB15K triples (fb15k_triples.py)
    if pair and Path(pair).exists():
        root = Path(pair)
        name = detect_loader(root)
        task = LOADERS.make(name).load(root, LoadOptions(data_root=Path(data_dir) if data_dir else None, **opts))
    elif src and tgt and Path(src).is_dir() and Path(tgt).is_dir():
        from .loaders.tsv import load_tsv_pair

        task = load_tsv_pair(Path(src), Path(tgt), links_path=Path(links) if links else None,
                             options=LoadOptions(**opts))
    else:
        if pair:
            entry, swap = catalog.get(pair), False
        elif src and tgt:
            for d in (src, tgt):
                if ("/" in d or d.startswith(".")) and not Path(d).exists():
                    raise MmeaInputError(f"{d}: no such directory")
            entry, swap = catalog.find_pair(src, tgt)
        else:
            raise MmeaInputError("give --src and --tgt (catalog names or TSV folders), or --pair DIR")
        if entry.kind != "pair":
            raise MmeaInputError(f"{entry.name} is a link-prediction dataset; use `mmea linkpred`")
        if seed_ratio is None and not use_dataset_split:
            opts["seed_ratio"] = entry.default_seed_ratio
        if entry.generated:
            from .demo import ensure_demo

            folder = ensure_demo(seed=0)
            data_root = folder.parent
        else:
            data_root = locate(entry, data_dir, download=download)
            folder = data_root / entry.path
        loader = LOADERS.make(entry.loader)
        task = loader.load(folder, LoadOptions(pair=entry.pair, swap=swap, data_root=data_root, **opts))
        task.provenance.setdefault("catalog", entry.name)
        if entry.generated:
            task.name = entry.name
    task.meta.setdefault("timings", {})["load_s"] = time.perf_counter() - t0
    return task


def load_linkpred_dataset(name_or_dir: str, data_dir: str | None = None, download: bool = False,
                          progress: bool = False):
    """Load a :class:`~mmea.data.LinkPredictionDataset` by catalog name or folder (``progress``: a loading bar)."""
    from .loaders import LOADERS, LoadOptions
    from .parsing import loading_bar

    if Path(name_or_dir).is_dir():
        folder = Path(name_or_dir)
        data_root = folder.parent
    else:
        entry = load_catalog().get(name_or_dir)
        if entry.kind != "linkpred":
            raise MmeaInputError(f"{name_or_dir} is an alignment pair, not a link-prediction dataset")
        data_root = locate(entry, data_dir, download=download)
        folder = data_root / entry.path
    with loading_bar(progress, desc="loading"):
        return LOADERS.make("linkpred").load(folder, LoadOptions(data_root=data_root))
