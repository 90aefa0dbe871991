"""MNIST: find, download, parse and validate the four IDX files; subsets and normalisation.

Files are looked for in a directory given by argument (``--data-dir``) or ``DROPOUT_DEMO_DATA``
(flat, or torchvision's ``MNIST/raw/`` layout), else in the default cache directory, where they
are downloaded with torchvision when absent. Each file is parsed in one go into a uint8 tensor.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import MNIST_TEST_SIZE, MNIST_TRAIN_SIZE

logger = logging.getLogger(__name__)

ENV_VAR = "DROPOUT_DEMO_DATA"
IMAGE_SIZE = 28
NUM_CLASSES = 10
MEAN = 0.5  # the seed's Normalize(0.5, 0.5); canvas preprocessing uses the same constants
STD = 0.5

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
SPLIT_SIZES = {"train": MNIST_TRAIN_SIZE, "test": MNIST_TEST_SIZE}

DOWNLOAD_SECONDS = 300.0  # about 11 MB: seconds on any working connection
_IDX_UBYTE = 0x08
_GZIP_MAGIC = b"\x1f\x8b"
_WHERE_TO_PUT = (
    "Put the four files {names} (each raw or .gz) directly in {dir} or in {dir}/MNIST/raw, "
    "or point --data-dir / " + ENV_VAR + " at a directory that holds them."
)


class DataError(Exception):
    """MNIST data is missing or unusable; the message names the file and what is wrong."""


@dataclass(frozen=True, eq=False, repr=False)
class MNIST:
    """The whole data set as tensors: images uint8 (N, 28, 28), labels int64 (N,)."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str

    def __repr__(self) -> str:
        return (
            f"MNIST(train={len(self.train_labels)}, test={len(self.test_labels)}, "
            f"source={self.source!r})"
        )


# ---------------------------------------------------------------- locating the files


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/dropout_demo`` (a relative value is ignored, as XDG says), else
    ``~/.cache/dropout_demo``: where downloaded data and saved runs live by default."""
    cache = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(cache) if os.path.isabs(cache) else Path.home() / ".cache"
    return base / "dropout_demo"


def default_data_dir() -> Path:
    return cache_dir() / "mnist"


def _resolve(data_dir: str | os.PathLike[str] | None) -> tuple[Path, str | None]:
    """The directory to use and, when it was chosen explicitly, who chose it."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser().resolve(), "--data-dir"
    env = os.environ.get(ENV_VAR, "")
    if env:
        return Path(env).expanduser().resolve(), ENV_VAR
    return default_data_dir().expanduser().resolve(), None


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Argument, else ``DROPOUT_DEMO_DATA``, else :func:`default_data_dir` (absolute)."""
    return _resolve(data_dir)[0]


def _find(directory: Path, name: str) -> Path | None:
    # Raw before .gz: torchvision's download leaves both, and raw skips decompression.
    for folder in (directory, directory / "MNIST" / "raw"):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _locate(directory: Path) -> tuple[dict[str, Path], list[str]]:
    """Paths of the files found in ``directory`` and names of those that are missing."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for key, name in FILES.items():
        path = _find(directory, name)
        if path is None:
            missing.append(name)
        else:
            found[key] = path
    return found, missing


def _where_to_put(directory: Path) -> str:
    return _WHERE_TO_PUT.format(names=", ".join(FILES.values()), dir=directory)


def _missing_error(directory: Path, origin: str | None, missing: list[str]) -> DataError:
    chosen = f" (chosen by {origin})" if origin else ""
    if not directory.is_dir():
        problem = f"MNIST directory {directory}{chosen} does not exist."
    else:
        problem = f"MNIST files missing in {directory}{chosen}: {', '.join(missing)}."
    return DataError(f"{problem} {_where_to_put(directory)}")


def _download(root: Path) -> None:
    """Download the four files into ``root/MNIST/raw`` (torchvision checks their md5)."""
    from torchvision.datasets import MNIST as TorchvisionMNIST

    TorchvisionMNIST(str(root), download=True)


def _download_with_deadline(root: Path, seconds: float) -> None:
    """``_download`` in a daemon thread: torchvision's HTTP reads have no timeout, and a
    stalled connection must not hold the loading lock (and every training run) forever."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            _download(root)
            outcome.append(None)
        except BaseException as exc:  # handed to the caller below
            outcome.append(exc)

    thread = threading.Thread(target=target, name="mnist-download", daemon=True)
    thread.start()
    thread.join(seconds)
    if not outcome:
        raise TimeoutError(f"no complete download after {seconds:g} s")
    if outcome[0] is not None:
        raise outcome[0]


def _download_or_explain(root: Path) -> None:
    logger.info("MNIST not found in %s; downloading it with torchvision", root)
    try:
        _download_with_deadline(root, DOWNLOAD_SECONDS)
    except Exception as exc:  # offline, proxy, disk, checksum: all end in the same advice
        reason = " ".join(str(exc).split()) or "no details"  # torchvision's is multi-line
        if len(reason) > 300:
            reason = reason[:297] + "..."
        raise DataError(
            f"MNIST is not in {root} and downloading it failed ({type(exc).__name__}: "
            f"{reason}). {_where_to_put(root)}"
        ) from exc


# ---------------------------------------------------------------- reading IDX files


def _fail(path: Path, problem: str) -> DataError:
    return DataError(f"Bad MNIST file {path}: {problem}")


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise _fail(path, "file not found") from None
    except OSError as exc:
        raise _fail(path, f"cannot read it ({exc.strerror or exc})") from exc
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError as exc:
        raise _fail(path, "truncated gzip file (the compressed data ends early)") from exc
    except gzip.BadGzipFile as exc:
        if not raw.startswith(_GZIP_MAGIC):
            raise _fail(path, "not a gzip file (named .gz but has no gzip header)") from exc
        raise _fail(path, f"corrupt gzip file ({exc})") from exc
    except zlib.error as exc:
        raise _fail(path, f"corrupt gzip file ({exc})") from exc


def _parse_idx(path: Path, data: bytes, ndim: int | None) -> torch.Tensor:
    if len(data) < 4:
        raise _fail(path, f"too short for an IDX header ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    dims_count = data[3]
    if (
        data[:2] != b"\0\0"
        or data[2] != _IDX_UBYTE
        or dims_count == 0
        or ndim not in (None, dims_count)
    ):
        expected = f"{0x800 | ndim} ({ndim}-D unsigned-byte IDX)" if ndim else "0x0000080N"
        hint = "; it looks gzip-compressed, so name it .gz" if data.startswith(_GZIP_MAGIC) else ""
        raise _fail(path, f"wrong magic number {magic} (0x{magic:08X}), expected {expected}{hint}")
    header = 4 + 4 * dims_count
    if len(data) < header:
        raise _fail(path, f"truncated IDX header ({len(data)} of {header} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=dims_count, offset=4))
    expected_bytes = math.prod(dims)
    payload = len(data) - header
    if payload != expected_bytes:
        shape = "x".join(map(str, dims))
        state = "truncated" if payload < expected_bytes else "has extra bytes"
        raise _fail(
            path,
            f"wrong size: header says {shape} = {expected_bytes:,} bytes of data, "
            f"file holds {payload:,} ({state})",
        )
    # One copy so the tensor owns writable memory instead of viewing the immutable bytes.
    array = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()
    return torch.from_numpy(array)


def read_idx(path: str | os.PathLike[str], ndim: int | None = None) -> torch.Tensor:
    """Parse an unsigned-byte IDX file (raw, or gzipped when named ``.gz``) into uint8.

    ``ndim`` pins the magic number: 1 for label files (2049), 3 for image files (2051).
    Raises :class:`DataError` naming the file for anything unreadable or inconsistent.
    """
    path = Path(path)
    return _parse_idx(path, _read_bytes(path), ndim)


# ---------------------------------------------------------------- loading the data set


def _load_split(split: str, images_path: Path, labels_path: Path) -> tuple[torch.Tensor, ...]:
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if tuple(images.shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE):
        size = "x".join(map(str, images.shape[1:]))
        raise _fail(images_path, f"images are {size}, expected {IMAGE_SIZE}x{IMAGE_SIZE}")
    if len(images) != len(labels):
        raise _fail(
            labels_path,
            f"{len(labels):,} labels but {images_path.name} has {len(images):,} images",
        )
    if len(images) != SPLIT_SIZES[split]:
        raise _fail(images_path, f"{len(images):,} {split} images, expected {SPLIT_SIZES[split]:,}")
    bad = torch.nonzero(labels >= NUM_CLASSES).flatten()
    if len(bad):
        first = int(bad[0])
        raise _fail(
            labels_path,
            f"{len(bad):,} labels outside 0..{NUM_CLASSES - 1} "
            f"(first at index {first}: {int(labels[first])})",
        )
    return images, labels.long()


def _load(directory: Path, origin: str | None, download: bool) -> MNIST:
    found, missing = _locate(directory)
    if missing:
        if origin is not None or not download:
            raise _missing_error(directory, origin, missing)
        _download_or_explain(directory)
        found, missing = _locate(directory)
        if missing:
            raise _missing_error(directory, origin, missing)
    train_images, train_labels = _load_split("train", found["train_images"], found["train_labels"])
    test_images, test_labels = _load_split("test", found["test_images"], found["test_labels"])
    return MNIST(train_images, train_labels, test_images, test_labels, source=str(directory))


def load_mnist(data_dir: str | os.PathLike[str] | None = None, download: bool = True) -> MNIST:
    """Read and validate MNIST from :func:`resolve_data_dir`.

    Only the default directory is ever downloaded into (and only when ``download``): a
    directory the user named that lacks the files is an error, not a surprise download.
    """
    directory, origin = _resolve(data_dir)
    return _load(directory, origin, download)


_cache: dict[Path, MNIST] = {}
_cache_lock = threading.Lock()


def get_mnist(data_dir: str | os.PathLike[str] | None = None) -> MNIST:
    """:func:`load_mnist`, loaded once per process per directory, safe to call from threads."""
    directory, origin = _resolve(data_dir)
    with _cache_lock:  # held while loading, so concurrent first calls wait instead of reloading
        data = _cache.get(directory)
        if data is None:
            data = _cache[directory] = _load(directory, origin, download=True)
    return data


# ---------------------------------------------------------------- model-ready tensors


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28), (N, 1, 28, 28) or (28, 28) -> float32 (N, 1, 28, 28) in [-1, 1].

    Same arithmetic as the seed's ``ToTensor()`` then ``Normalize(0.5, 0.5)``.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 pixels 0..255, got {images.dtype}")
    if images.dim() == 2:
        images = images[None, None]
    elif images.dim() == 3:
        images = images[:, None]
    elif images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(
            f"normalize expects (N, 28, 28) or (N, 1, 28, 28), got {tuple(images.shape)}"
        )
    return images.to(torch.float32).div_(255.0).sub_(MEAN).div_(STD)


def subset(
    images: torch.Tensor, labels: torch.Tensor, size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random ``size``-subset without replacement; everything, in order, when full."""
    n = len(images)
    if len(labels) != n:
        raise ValueError(f"{n} images but {len(labels)} labels")
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= n:
        raise ValueError(f"subset size must be an integer in 1..{n}, got {size!r}")
    if size == n:
        return images, labels
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(n, generator=generator)[:size]
    return images[index], labels[index]
