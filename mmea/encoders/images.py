"""Image features: torchvision backbones and import of precomputed vectors.

Extraction (:class:`ImageFeatureExtractor`): the standard ImageNet
preprocessing (resize the short side to 256, centre-crop 224x224, scale to
[0, 1], normalise with the ImageNet mean and standard deviation), then

- ``resnet152`` (He et al. 2016): the 2048-d global-average-pooled output of
  the last residual stage (the layer before ``fc``), as used by EVA and MCLEA;
- ``vgg16`` (Simonyan & Zisserman 2015): the 4096-d ``fc7`` activation
  (classifier up to the second ReLU), as in the MMKG benchmark.

Pretrained weights come from the torchvision cache
(``torch.hub.get_dir()/checkpoints/<file>``, ``$TORCH_HOME``) or from a file
given as ``weights_path`` (``--image-weights``); nothing is downloaded.
Without weights extraction stops with a :class:`~mmea.encoders.WeightsNotFoundError`
unless ``allow_random_weights=True``, in which case ``info["weights"]`` says
``"random weights (NOT pretrained)"``.

Missing images and unreadable files never get random vectors: their rows are
zero and their presence mask is False; unreadable files are counted, the
first ten are logged and listed in ``info["unreadable_examples"]``.

Import (:func:`load_precomputed_image_features`): a pickle dict
``{entity id or URI -> vector}`` (EVA / MCLEA style), ``.npy`` with an id
list, ``.npz`` with ``ids`` and ``features`` arrays, or HDF5 when ``h5py`` is
installed.
"""

from __future__ import annotations

import logging
import pickle
import time
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from ..data.graph import KnowledgeGraph
from ..errors import MmeaError, MmeaInputError
from . import IMAGE_ENCODERS, EncodedFeatures, WeightsNotFoundError, progress_enabled

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RANDOM_WEIGHTS_LABEL",
    "ImageBackbone",
    "ResNet152Backbone",
    "Vgg16Backbone",
    "ImageFeatureExtractor",
    "imagenet_transform",
    "load_image",
    "image_features_for_kg",
    "load_precomputed_image_features",
]

log = logging.getLogger("mmea.encoders")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM_WEIGHTS_LABEL = "random weights (NOT pretrained)"
_MAX_LISTED = 10


# ---------------------------------------------------------------------------
# backbones
# ---------------------------------------------------------------------------

class ImageBackbone:
    """One torchvision architecture: how to build it and which layer to read."""

    dim: ClassVar[int]
    layer: ClassVar[str]
    #: torchvision weight files, preferred first (looked for in the hub cache)
    weight_files: ClassVar[tuple[str, ...]]
    weight_urls: ClassVar[tuple[str, ...]]

    def build(self):  # pragma: no cover - abstract
        """The torchvision model with random weights (weights are loaded afterwards)."""
        raise NotImplementedError

    def feature_module(self, model):  # pragma: no cover - abstract
        """A module mapping a ``(b, 3, 224, 224)`` batch to ``(b, dim)`` features."""
        raise NotImplementedError


@IMAGE_ENCODERS.register(name="resnet152", aliases=("resnet-152",))
class ResNet152Backbone(ImageBackbone):
    """ResNet-152, 2048-d average-pooled features (EVA / MCLEA)."""

    dim = 2048
    layer = "avgpool"
    weight_files = ("resnet152-394f9c45.pth", "resnet152-f82ba261.pth")
    weight_urls = tuple(f"https://download.pytorch.org/models/{f}" for f in weight_files)

    def build(self):
        from torchvision.models import resnet152

        return resnet152(weights=None)

    def feature_module(self, model):
        import torch

        model.fc = torch.nn.Identity()  # avgpool -> flatten -> (b, 2048)
        return model


@IMAGE_ENCODERS.register(name="vgg16", aliases=("vgg-16",))
class Vgg16Backbone(ImageBackbone):
    """VGG16, 4096-d fc7 features (MMKG)."""

    dim = 4096
    layer = "fc7"
    weight_files = ("vgg16-397923af.pth",)
    weight_urls = tuple(f"https://download.pytorch.org/models/{f}" for f in weight_files)

    def build(self):
        from torchvision.models import vgg16

        return vgg16(weights=None)

    def feature_module(self, model):
        import torch

        # classifier = [fc6, ReLU, Dropout, fc7, ReLU, Dropout, fc8]; keep up to the second ReLU
        return torch.nn.Sequential(model.features, model.avgpool, torch.nn.Flatten(1), *model.classifier[:5])


# ---------------------------------------------------------------------------
# loading and preprocessing
# ---------------------------------------------------------------------------

def imagenet_transform(size: int = 224, resize: int = 256):
    """Standard ImageNet evaluation preprocessing: resize, centre crop, tensor, normalise."""
    from torchvision import transforms

    return transforms.Compose([
        transforms.Resize(resize),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def load_image(path: str | Path, transform):
    """``(3, 224, 224)`` tensor of the image at ``path``, or the reason it could not be read."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            rgb = img.convert("RGB")
    except FileNotFoundError:
        return None, "file not found"
    except Exception as e:  # UnidentifiedImageError, truncated file, decompression bomb, ...
        return None, f"{type(e).__name__}: {e}"
    return transform(rgb), None


def _torch_hub_checkpoints() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


class ImageFeatureExtractor:
    """Batched image features from a torchvision backbone (``resnet152`` or ``vgg16``).

    Args:
        arch: a name of :data:`~mmea.encoders.IMAGE_ENCODERS`.
        weights_path: a state-dict file (``--image-weights``); default: the
            torchvision file in the hub cache.
        allow_random_weights: when no weights are found, use random ones
            (features labelled ``RANDOM_WEIGHTS_LABEL``) instead of failing.
        batch_size: images per forward pass.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda:0"``...
        num_workers: threads decoding images while the model runs.
        seed: seed of the random weights (only with ``allow_random_weights``).
    """

    def __init__(self, arch: str = "resnet152", weights_path: str | Path | None = None,
                 allow_random_weights: bool = False, batch_size: int = 32, device: str | None = "auto",
                 num_workers: int = 2, seed: int = 0, progress: bool = True):
        self.backbone: ImageBackbone = IMAGE_ENCODERS.make(arch)
        self.arch = self.backbone.registry_name
        self.weights_path = Path(weights_path).expanduser() if weights_path else None
        self.allow_random_weights = allow_random_weights
        if batch_size < 1:
            raise MmeaInputError(f"image batch size must be positive, got {batch_size}")
        self.batch_size = batch_size
        self.device = device
        self.num_workers = max(0, int(num_workers))
        self.seed = seed
        self.progress = progress
        self._model = None
        self._weights_label: str | None = None

    @property
    def dim(self) -> int:
        return self.backbone.dim

    def find_weights(self) -> Path | None:
        """The weights file to load: ``weights_path``, else the torchvision cache file, else None."""
        if self.weights_path is not None:
            if not self.weights_path.is_file():
                raise WeightsNotFoundError(
                    f"image weights file {self.weights_path} does not exist (--image-weights)",
                    hint=f"download {self.backbone.weight_urls[0]} on a connected machine and pass its path")
            return self.weights_path
        ckpt = _torch_hub_checkpoints()
        for name in self.backbone.weight_files:
            if (ckpt / name).is_file():
                return ckpt / name
        return None

    def config(self) -> dict:
        """Options that determine the features (for cache keys)."""
        w = self.find_weights()
        if w is None:
            weights = RANDOM_WEIGHTS_LABEL if self.allow_random_weights else None
        else:
            st = w.stat()
            weights = f"{w.name}:{st.st_size}:{int(st.st_mtime)}"
        return {"model": self.arch, "layer": self.backbone.layer, "weights": weights,
                "seed": self.seed if weights == RANDOM_WEIGHTS_LABEL else None}

    def load(self):
        """Build the backbone, load the weights, put it in eval mode on the device."""
        if self._model is not None:
            return self._model
        import torch

        weights = self.find_weights()
        if weights is None and not self.allow_random_weights:
            ckpt = _torch_hub_checkpoints()
            raise WeightsNotFoundError(
                f"no pretrained {self.arch} weights: looked for {' or '.join(self.backbone.weight_files)} "
                f"in {ckpt} (the torchvision cache; set by $TORCH_HOME)",
                hint=(f"download {self.backbone.weight_urls[0]} on a connected machine and pass "
                      f"`--image-weights FILE`, or copy it into {ckpt}; random-weight features only with "
                      "--allow-random-image-weights (they are labelled as such), or import precomputed "
                      "features with --image-features"))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = self.backbone.build()
        if weights is not None:
            try:
                state = torch.load(weights, map_location="cpu", weights_only=True)
            except Exception as e:
                raise MmeaInputError(f"{weights}: not a PyTorch weights file ({type(e).__name__}: {e})",
                                     hint=f"pass the torchvision file {self.backbone.weight_files[0]}") from None
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
            state = {k.removeprefix("module."): v for k, v in state.items()}
            try:
                model.load_state_dict(state)
            except RuntimeError as e:
                raise MmeaInputError(f"{weights}: these are not {self.arch} weights ({str(e).splitlines()[0]})",
                                     hint=f"pass the torchvision file {self.backbone.weight_files[0]}") from None
            self._weights_label = f"pretrained ({weights})"
        else:
            log.warning("image encoder %s: %s -- features carry no visual meaning", self.arch,
                        RANDOM_WEIGHTS_LABEL)
            self._weights_label = RANDOM_WEIGHTS_LABEL
        from .names import _resolve_device

        device = _resolve_device(self.device)
        self._model = self.backbone.feature_module(model).eval().to(device)
        self._device = device
        return self._model

    def extract(self, paths: Sequence[str], root: str | Path | None = None) -> EncodedFeatures:
        """Features ``(n, dim)`` of the images at ``paths`` ("" = no image), mask, info.

        Relative paths are resolved against ``root``.  Unreadable files get a
        zero row and mask False and are counted in ``info["unreadable"]``.
        """
        import torch
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        n = len(paths)
        out = np.zeros((n, self.dim), dtype=np.float32)  # (n, dim)
        mask = np.zeros(n, dtype=bool)  # (n,)
        todo = [i for i, p in enumerate(paths) if p]
        unreadable: list[tuple[str, str]] = []
        if todo:
            model = self.load()
            transform = imagenet_transform()
            root = Path(root) if root is not None else None

            def full(p: str) -> Path:
                q = Path(p)
                return root / q if root is not None and not q.is_absolute() else q

            pool = None
            if self.num_workers > 0:
                from concurrent.futures import ThreadPoolExecutor

                pool = ThreadPoolExecutor(self.num_workers)
            bar = tqdm(total=len(todo), desc=f"images ({self.arch})", unit="img",
                       disable=not progress_enabled(self.progress))
            try:
                for start in range(0, len(todo), self.batch_size):
                    batch = todo[start:start + self.batch_size]
                    files = [full(paths[i]) for i in batch]
                    loaded = list(pool.map(lambda f: load_image(f, transform), files)) if pool else \
                        [load_image(f, transform) for f in files]
                    ok = []
                    for i, f, (tensor, why) in zip(batch, files, loaded):
                        if tensor is None:
                            unreadable.append((str(f), why))
                        else:
                            ok.append((i, tensor))
                    if ok:
                        x = torch.stack([t for _, t in ok]).to(self._device)  # (b, 3, 224, 224)
                        with torch.inference_mode():
                            feats = model(x).float().cpu().numpy()  # (b, dim)
                        rows = np.array([i for i, _ in ok])
                        out[rows] = feats
                        mask[rows] = True
                    bar.update(len(batch))
            finally:
                bar.close()
                if pool is not None:
                    pool.shutdown()
        if unreadable:
            log.warning("images: %d of %d files could not be read (zero vector, mask False); first %d:\n  %s",
                        len(unreadable), len(todo), min(len(unreadable), _MAX_LISTED),
                        "\n  ".join(f"{p}: {why}" for p, why in unreadable[:_MAX_LISTED]))
        secs = time.perf_counter() - t0
        info = {"encoder": self.arch, "model": self.arch, "layer": self.backbone.layer, "dim": self.dim,
                "weights": self._weights_label or "(not loaded: no images)",
                "images_listed": len(todo), "images_encoded": int(mask.sum()), "unreadable": len(unreadable),
                "unreadable_examples": [f"{p}: {why}" for p, why in unreadable[:_MAX_LISTED]],
                "time_s": round(secs, 3),
                "images_per_s": round(int(mask.sum()) / secs, 2) if mask.any() and secs > 0 else None}
        return EncodedFeatures(out, mask, info)


def image_features_for_kg(kg: KnowledgeGraph, extractor: ImageFeatureExtractor | None = None,
                          root: str | Path | None = None) -> EncodedFeatures:
    """Image features of ``kg``: its precomputed ``image_features``, else extracted from ``image_paths``.

    A KG with neither gets an ``(n, 0)`` matrix and an all-False mask (no
    model is built; :func:`mmea.features.compute_task_features` widens it
    with zeros when the other KG has images).
    """
    n = kg.num_entities
    if kg.image_features is not None:
        mask = kg.image_mask if kg.image_mask is not None else np.any(kg.image_features != 0, axis=1)
        feats = np.where(mask[:, None], kg.image_features, 0).astype(np.float32)
        return EncodedFeatures(feats, mask.copy(), {"encoder": "precomputed", "model": kg.meta.get(
            "image_features_source", "dataset"), "dim": int(feats.shape[1]), "images_encoded": int(mask.sum())})
    if kg.image_paths is not None and any(kg.image_paths):
        if extractor is None:
            raise MmeaInputError(f"{kg.name}: has image files but no image encoder was given")
        return extractor.extract(kg.image_paths, root=root)
    return EncodedFeatures(np.zeros((n, 0), dtype=np.float32), np.zeros(n, dtype=bool),
                           {"encoder": "none", "model": None, "dim": 0, "images_encoded": 0,
                            "note": f"{kg.name} has no images"})


# ---------------------------------------------------------------------------
# precomputed features
# ---------------------------------------------------------------------------

_ID_KEYS = ("ids", "keys", "entities", "entity_ids", "uris", "names")
_FEAT_KEYS = ("features", "feats", "embeddings", "vectors", "x", "arr_0")


def _read_id_list(path: Path) -> list[list[str]]:
    """One row per non-blank line; every tab-separated field is a candidate key."""
    if not path.is_file():
        raise MmeaInputError(f"image id list {path} does not exist")
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\r\n")
            if line.strip():
                rows.append([f.strip() for f in line.split("\t") if f.strip()])
    return rows


def _key_variants(key: Any) -> list[str]:
    if isinstance(key, bytes):
        key = key.decode("utf-8", "replace")
    if isinstance(key, (np.integer, int)):
        return [str(int(key))]
    s = str(key).strip()
    return [s, s.strip("<>")] if s.startswith("<") else [s]


def _match(kg: KnowledgeGraph, keys: Sequence[Any] | Sequence[list]) -> np.ndarray:
    """Internal entity id for each key (or list of candidate keys); -1 when none matches."""
    idx, uidx = kg.index, kg.uri_index
    out = np.full(len(keys), -1, dtype=np.int64)
    for j, k in enumerate(keys):
        for cand in (k if isinstance(k, list) else [k]):
            for v in _key_variants(cand):
                i = idx.get(v, uidx.get(v))
                if i is not None:
                    out[j] = i
                    break
            if out[j] >= 0:
                break
    return out


def _pick(arrays: dict, names: Sequence[str]):
    for k in names:
        if k in arrays:
            return arrays[k]
    return None


def _read_feature_file(path: Path, ids_path: str | Path | None):
    """``(keys, vectors)`` of an image feature file, by suffix (see :func:`load_precomputed_image_features`)."""
    suffix = path.suffix.lower()
    keys: list
    if suffix in (".pkl", ".pickle"):
        with open(path, "rb") as fh:
            try:
                obj = pickle.load(fh)
            except Exception as e:
                raise MmeaInputError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None
        if not isinstance(obj, dict):
            raise MmeaInputError(f"{path}: expected a pickled dict {{entity id or URI -> vector}}, "
                                 f"found {type(obj).__name__}")
        keys = list(obj.keys())
        vectors = [_as_vector(v) for v in obj.values()]
    elif suffix == ".npy":
        if ids_path is None:
            raise MmeaInputError(f"{path}: a .npy feature matrix needs an id list (one id or URI per line)",
                                 hint="pass --image-ids FILE (row i of the matrix = line i of the file)")
        vectors = np.load(path, allow_pickle=False)
        keys = _read_id_list(Path(ids_path))
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        vectors = _pick(arrays, _FEAT_KEYS)
        id_arr = _pick(arrays, _ID_KEYS)
        if vectors is None:
            raise MmeaInputError(f"{path}: no feature array; expected one named {', '.join(_FEAT_KEYS)}; "
                                 f"found {', '.join(arrays) or 'none'}")
        if id_arr is not None:
            keys = id_arr.tolist()
        elif ids_path is not None:
            keys = _read_id_list(Path(ids_path))
        else:
            raise MmeaInputError(f"{path}: no id array ({', '.join(_ID_KEYS)}) and no id list given",
                                 hint="pass --image-ids FILE (row i of the matrix = line i of the file)")
    elif suffix in (".h5", ".hdf5"):
        keys, vectors = _read_h5(path, ids_path)
    else:
        raise MmeaInputError(f"{path}: unknown image feature format {suffix!r}",
                             hint="use a pickle dict (.pkl), .npy + id list, .npz or HDF5 (.h5)")
    return keys, vectors


def load_precomputed_image_features(path: str | Path, kg: KnowledgeGraph,
                                    ids_path: str | Path | None = None) -> EncodedFeatures:
    """Image features of the entities of ``kg`` read from ``path``.

    Formats (by suffix):

    - ``.pkl`` / ``.pickle``: a dict ``{entity id or URI -> vector}`` (EVA,
      MCLEA).  Only load pickles you trust: unpickling can run code.
    - ``.npy``: a ``(m, d)`` array whose row ``i`` belongs to line ``i`` of
      ``ids_path`` (an id or URI per line; every tab-separated field of a
      line is tried, so ``ent_ids`` files work).
    - ``.npz``: arrays ``features`` (or ``feats``/``embeddings``/``x``) and
      ``ids`` (or ``keys``/``entities``/``uris``), else ``ids_path``.
    - ``.h5`` / ``.hdf5`` (needs ``h5py``): datasets ``features`` + ``ids``,
      or one dataset per entity key.

    Keys that match no entity of ``kg`` are ignored (a shared file holds both
    KGs); entities without a vector, or with an all-zero one, get mask False.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise MmeaInputError(f"image feature file {path} does not exist (--image-features)")
    keys, vectors = _read_feature_file(path, ids_path)
    if isinstance(vectors, np.ndarray):
        if vectors.ndim != 2:
            raise MmeaInputError(f"{path}: expected a 2-D feature matrix, found shape {vectors.shape}")
    dims = {len(v) for v in vectors}
    if len(dims) > 1:
        raise MmeaInputError(f"{path}: feature vectors have different lengths {sorted(dims)[:5]}")
    if len(keys) != len(vectors):
        raise MmeaInputError(f"{path}: {len(vectors)} feature rows but {len(keys)} ids")
    dim = dims.pop() if dims else 0
    rows = _match(kg, keys)
    hit = rows >= 0
    if not hit.any():
        ex = ", ".join(repr(k[0] if isinstance(k, list) else k) for k in keys[:3])
        raise MmeaInputError(f"{path}: none of its {len(keys)} keys ({ex}, ...) is an entity id or URI of {kg.name}",
                             hint=f"{kg.name} ids look like {kg.ids[:2]} and URIs like {kg.uris[:1]}")
    out = np.zeros((kg.num_entities, dim), dtype=np.float32)  # (n, d)
    mat = np.asarray(vectors, dtype=np.float32) if not isinstance(vectors, np.ndarray) else vectors
    out[rows[hit]] = mat[np.flatnonzero(hit)]
    mask = np.zeros(kg.num_entities, dtype=bool)
    mask[rows[hit]] = True
    zero = mask & ~np.any(out != 0, axis=1)
    mask &= ~zero
    info = {"encoder": "precomputed", "model": str(path), "dim": dim, "keys_in_file": len(keys),
            "matched": int(hit.sum()), "unmatched_keys": int((~hit).sum()), "all_zero_vectors": int(zero.sum()),
            "images_encoded": int(mask.sum())}
    log.info("%s: image features for %d of %d entities of %s from %s", kg.name, int(mask.sum()),
             kg.num_entities, kg.name, path)
    return EncodedFeatures(out, mask, info)


def _as_vector(v) -> np.ndarray:
    if hasattr(v, "detach"):  # a torch tensor
        v = v.detach().cpu().numpy()
    return np.asarray(v, dtype=np.float32).reshape(-1)


def _read_h5(path: Path, ids_path) -> tuple[list, Any]:
    try:
        import h5py
    except ImportError:
        raise MmeaInputError(f"{path}: reading HDF5 needs the h5py package, which is not installed",
                             hint="pip install h5py, or convert the file to .npz (ids + features)") from None
    with h5py.File(path, "r") as f:
        if "features" in f:
            vectors = np.asarray(f["features"][()], dtype=np.float32)
            if "ids" in f:
                keys = [k.decode() if isinstance(k, bytes) else k for k in f["ids"][()].tolist()]
            elif ids_path is not None:
                keys = _read_id_list(Path(ids_path))
            else:
                raise MmeaInputError(f"{path}: has 'features' but no 'ids' dataset and no id list given",
                                     hint="pass --image-ids FILE (row i = line i)")
            return keys, vectors
        keys, vecs = [], []
        for k in f.keys():
            ds = f[k]
            if hasattr(ds, "shape"):
                keys.append(k)
                vecs.append(np.asarray(ds[()], dtype=np.float32).reshape(-1))
        if not keys:
            raise MmeaError(f"{path}: no datasets found in the HDF5 file")
        return keys, vecs
