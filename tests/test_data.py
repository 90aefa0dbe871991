"""The MNIST data layer: IDX parsing and its errors, locating/downloading, caching, subsets."""

from __future__ import annotations

import gzip
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dropout_demo import data
from dropout_demo.data import (
    FILES,
    MEAN,
    STD,
    DataError,
    default_data_dir,
    get_mnist,
    load_mnist,
    normalize,
    read_idx,
    resolve_data_dir,
    subset,
)

SMALL = {"train": 6, "test": 4}


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """An unsigned-byte IDX file for ``array``, optionally with a forged magic number."""
    magic = (0x0800 | array.ndim) if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(content) if path.suffix == ".gz" else content)
    return path


def small_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = np.arange(n, dtype=np.uint8) % 10
    return images, labels


def write_small_mnist(folder: Path, gz: bool = True, overrides: dict[str, bytes] | None = None):
    """Four small, valid MNIST files (sizes in SMALL) in ``folder``; returns the arrays."""
    arrays = {}
    for split, seed in (("train", 1), ("test", 2)):
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = small_split(SMALL[split], seed)
    for key, name in FILES.items():
        content = (overrides or {}).get(key, idx_bytes(arrays[key]))
        write_idx(folder / (name + (".gz" if gz else "")), content)
    return arrays


@pytest.fixture
def small_sizes(monkeypatch):
    monkeypatch.setattr(data, "SPLIT_SIZES", SMALL)


@pytest.fixture
def offline(monkeypatch):
    """Any download attempt fails the way torchvision does without a network; counts calls."""
    calls: list[Path] = []

    def fail(root: Path) -> None:
        calls.append(root)
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: <urlopen error>")

    monkeypatch.setattr(data, "_download", fail)
    return calls


@pytest.fixture
def cache_home(tmp_path, monkeypatch) -> Path:
    """Default data directory under tmp, and no DROPOUT_DEMO_DATA."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("DROPOUT_DEMO_DATA", raising=False)
    return tmp_path / "cache" / "dropout_demo" / "mnist"


def message(excinfo: pytest.ExceptionInfo) -> str:
    return str(excinfo.value)


# ---------------------------------------------------------------- read_idx


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_round_trips_images_and_labels(tmp_path, suffix):
    images, labels = small_split(5, seed=0)
    images_path = write_idx(tmp_path / f"img{suffix}", idx_bytes(images))
    labels_path = write_idx(tmp_path / f"lbl{suffix}", idx_bytes(labels))

    got_images = read_idx(images_path, ndim=3)
    got_labels = read_idx(labels_path)

    assert got_images.dtype == torch.uint8 and got_images.shape == (5, 28, 28)
    assert np.array_equal(got_images.numpy(), images)
    assert got_labels.dtype == torch.uint8 and got_labels.tolist() == labels.tolist()
    got_images[0, 0, 0] = 7  # owns writable memory, not a view of the file's bytes


def test_read_idx_missing_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    with pytest.raises(DataError) as excinfo:
        read_idx(path)
    assert str(path) in message(excinfo) and "not found" in message(excinfo)


def test_read_idx_truncated_gzip(tmp_path):
    images, _ = small_split(5, seed=0)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(images))[:-100])
    with pytest.raises(DataError) as excinfo:
        read_idx(path)
    assert str(path) in message(excinfo) and "truncated gzip" in message(excinfo)


def test_read_idx_corrupt_gzip(tmp_path):
    images, _ = small_split(5, seed=0)  # random pixels: deflate stores them, so a flip hits CRC
    packed = bytearray(gzip.compress(idx_bytes(images)))
    packed[len(packed) // 2] ^= 0xFF
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(bytes(packed))
    with pytest.raises(DataError) as excinfo:
        read_idx(path)
    assert str(path) in message(excinfo) and "corrupt gzip" in message(excinfo)


def test_read_idx_gz_name_without_gzip_content(tmp_path):
    _, labels = small_split(5, seed=0)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(idx_bytes(labels))
    with pytest.raises(DataError) as excinfo:
        read_idx(path)
    assert str(path) in message(excinfo) and "not a gzip file" in message(excinfo)


def test_read_idx_wrong_magic_for_the_role(tmp_path):
    _, labels = small_split(5, seed=0)
    path = write_idx(tmp_path / "train-images-idx3-ubyte", idx_bytes(labels))
    with pytest.raises(DataError) as excinfo:
        read_idx(path, ndim=3)
    text = message(excinfo)
    assert str(path) in text and "wrong magic number 2049" in text and "expected 2051" in text


@pytest.mark.parametrize("magic", [0x00000D03, 0x01000803, 0x00000800])  # float, junk, 0-D
def test_read_idx_wrong_magic(tmp_path, magic):
    images, _ = small_split(2, seed=0)
    path = write_idx(tmp_path / "images.gz", idx_bytes(images, magic=magic))
    with pytest.raises(DataError) as excinfo:
        read_idx(path)
    assert str(path) in message(excinfo) and f"wrong magic number {magic}" in message(excinfo)


def test_read_idx_raw_name_with_gzip_content_gets_a_hint(tmp_path):
    images, _ = small_split(2, seed=0)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(gzip.compress(idx_bytes(images)))
    with pytest.raises(DataError) as excinfo:
        read_idx(path)
    assert "wrong magic number" in message(excinfo) and "name it .gz" in message(excinfo)


@pytest.mark.parametrize(("cut", "state"), [(-1, "truncated"), (+3, "has extra bytes")])
def test_read_idx_payload_size_must_match_header(tmp_path, cut, state):
    images, _ = small_split(5, seed=0)
    content = idx_bytes(images)
    content = content[:cut] if cut < 0 else content + b"\0" * cut
    path = write_idx(tmp_path / "train-images-idx3-ubyte.gz", content)
    with pytest.raises(DataError) as excinfo:
        read_idx(path)
    text = message(excinfo)
    assert str(path) in text and "header says 5x28x28 = 3,920 bytes" in text and state in text


@pytest.mark.parametrize("content", [b"", b"\0\0\x08", b"\0\0\x08\x03\0\0\0\x05"])
def test_read_idx_truncated_header(tmp_path, content):
    path = write_idx(tmp_path / "train-images-idx3-ubyte", content)
    with pytest.raises(DataError) as excinfo:
        read_idx(path)
    assert str(path) in message(excinfo) and "header" in message(excinfo)


def test_read_idx_unreadable_path(tmp_path):
    folder = tmp_path / "train-images-idx3-ubyte"
    folder.mkdir()
    with pytest.raises(DataError) as excinfo:
        read_idx(folder)
    assert str(folder) in message(excinfo) and "cannot read" in message(excinfo)


# ---------------------------------------------------------------- load_mnist on small files


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("layout", ["flat", "MNIST/raw"])
def test_load_mnist_finds_both_layouts_gz_or_raw(tmp_path, small_sizes, offline, gz, layout):
    folder = tmp_path if layout == "flat" else tmp_path / "MNIST" / "raw"
    arrays = write_small_mnist(folder, gz=gz)

    mnist = load_mnist(tmp_path)

    assert mnist.source == str(tmp_path.resolve())
    for key in FILES:
        got = getattr(mnist, key)
        assert np.array_equal(got.numpy(), arrays[key])
    assert mnist.train_images.dtype == torch.uint8 and mnist.train_images.shape == (6, 28, 28)
    assert mnist.train_labels.dtype == torch.int64 and mnist.test_labels.dtype == torch.int64
    assert offline == []  # found: nothing downloaded


def test_load_mnist_prefers_raw_over_gz(tmp_path, small_sizes):
    write_small_mnist(tmp_path, gz=True)
    arrays = write_small_mnist(tmp_path, gz=False)
    broken = tmp_path / "train-images-idx3-ubyte.gz"
    broken.write_bytes(b"not used")  # would fail if read
    assert np.array_equal(load_mnist(tmp_path).train_images.numpy(), arrays["train_images"])


def test_label_count_must_match_image_count(tmp_path, small_sizes):
    labels = np.zeros(5, dtype=np.uint8)
    write_small_mnist(tmp_path, overrides={"train_labels": idx_bytes(labels)})
    with pytest.raises(DataError) as excinfo:
        load_mnist(tmp_path)
    text = message(excinfo)
    assert "train-labels-idx1-ubyte.gz" in text and "5 labels" in text
    assert "train-images-idx3-ubyte.gz has 6 images" in text


def test_split_size_must_be_the_standard_one(tmp_path, small_sizes):
    images, labels = small_split(3, seed=0)
    write_small_mnist(
        tmp_path, overrides={"test_images": idx_bytes(images), "test_labels": idx_bytes(labels)}
    )
    with pytest.raises(DataError) as excinfo:
        load_mnist(tmp_path)
    text = message(excinfo)
    assert "t10k-images-idx3-ubyte.gz" in text and "3 test images, expected 4" in text


def test_images_must_be_28x28(tmp_path, small_sizes):
    images = np.zeros((6, 28, 27), dtype=np.uint8)
    write_small_mnist(tmp_path, overrides={"train_images": idx_bytes(images)})
    with pytest.raises(DataError) as excinfo:
        load_mnist(tmp_path)
    text = message(excinfo)
    assert "train-images-idx3-ubyte.gz" in text and "28x27, expected 28x28" in text


def test_labels_must_be_digits(tmp_path, small_sizes):
    labels = np.array([0, 1, 2, 10, 4, 255], dtype=np.uint8)
    write_small_mnist(tmp_path, overrides={"train_labels": idx_bytes(labels)})
    with pytest.raises(DataError) as excinfo:
        load_mnist(tmp_path)
    text = message(excinfo)
    assert "train-labels-idx1-ubyte.gz" in text
    assert "2 labels outside 0..9 (first at index 3: 10)" in text


def test_labels_file_with_images_magic(tmp_path, small_sizes):
    images, _ = small_split(6, seed=0)
    write_small_mnist(tmp_path, overrides={"train_labels": idx_bytes(images)})
    with pytest.raises(DataError) as excinfo:
        load_mnist(tmp_path)
    text = message(excinfo)
    assert "train-labels-idx1-ubyte.gz" in text and "wrong magic number 2051" in text


# ---------------------------------------------------------------- where the files come from


def test_resolve_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("DROPOUT_DEMO_DATA", raising=False)
    assert default_data_dir() == tmp_path / "xdg" / "dropout_demo" / "mnist"
    assert resolve_data_dir() == (tmp_path / "xdg" / "dropout_demo" / "mnist").resolve()

    monkeypatch.setenv("DROPOUT_DEMO_DATA", str(tmp_path / "env"))
    assert resolve_data_dir() == (tmp_path / "env").resolve()
    assert resolve_data_dir(tmp_path / "arg") == (tmp_path / "arg").resolve()


def test_default_data_dir_without_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / ".cache" / "dropout_demo" / "mnist"


def test_explicit_directory_without_files_is_an_error_not_a_download(tmp_path, offline):
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"")
    with pytest.raises(DataError) as excinfo:
        load_mnist(tmp_path)
    text = message(excinfo)
    assert str(tmp_path.resolve()) in text and "--data-dir" in text
    missing = "train-images-idx3-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"
    assert f"missing in {tmp_path.resolve()} (chosen by --data-dir): {missing}." in text
    assert "Put the four files" in text and "MNIST/raw" in text
    assert offline == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-labels-idx1-ubyte.gz"]


def test_env_directory_without_files_names_the_variable(tmp_path, monkeypatch, offline):
    monkeypatch.setenv("DROPOUT_DEMO_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataError) as excinfo:
        load_mnist()
    text = message(excinfo)
    assert (
        f"{(tmp_path / 'nowhere').resolve()} (chosen by DROPOUT_DEMO_DATA) does not exist" in text
    )
    assert "Put the four files" in text
    assert offline == [] and not (tmp_path / "nowhere").exists()


def test_offline_without_files_says_where_to_put_them(cache_home, offline):
    with pytest.raises(DataError) as excinfo:
        load_mnist()
    text = message(excinfo)
    assert f"MNIST is not in {cache_home.resolve()} and downloading it failed" in text
    assert "RuntimeError: Error downloading" in text
    for name in FILES.values():
        assert name in text
    assert "MNIST/raw" in text and "--data-dir" in text and "DROPOUT_DEMO_DATA" in text
    assert offline == [cache_home.resolve()]


def test_no_download_when_not_allowed(cache_home, offline):
    with pytest.raises(DataError) as excinfo:
        load_mnist(download=False)
    assert "Put the four files" in message(excinfo) and offline == []


def test_default_directory_is_downloaded_into_once(cache_home, small_sizes, monkeypatch):
    calls: list[Path] = []

    def fake_download(root: Path) -> None:  # lays the files out the way torchvision does
        calls.append(root)
        write_small_mnist(root / "MNIST" / "raw", gz=False)

    monkeypatch.setattr(data, "_download", fake_download)
    first = load_mnist()
    second = load_mnist()
    assert calls == [cache_home.resolve()]
    assert first.source == second.source == str(cache_home.resolve())
    assert torch.equal(first.test_images, second.test_images)


def test_download_that_leaves_files_missing_is_reported(cache_home, monkeypatch):
    monkeypatch.setattr(data, "_download", lambda root: None)
    with pytest.raises(DataError) as excinfo:
        load_mnist()
    assert "does not exist" in message(excinfo) and str(cache_home.resolve()) in message(excinfo)


def test_a_stalled_download_ends_in_a_clear_error(cache_home, monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(data, "_download", lambda root: release.wait(10))  # a hung connection
    monkeypatch.setattr(data, "DOWNLOAD_SECONDS", 0.2)
    try:
        with pytest.raises(DataError) as excinfo:
            load_mnist()
    finally:
        release.set()
    assert "TimeoutError: no complete download after 0.2 s" in message(excinfo)
    assert "Put the four files" in message(excinfo)


# ---------------------------------------------------------------- get_mnist cache


def test_get_mnist_loads_once_under_concurrent_calls(tmp_path, small_sizes, monkeypatch):
    write_small_mnist(tmp_path)
    reads: list[Path] = []
    real_read_idx = data.read_idx

    def slow_read_idx(path, ndim=None):
        reads.append(Path(path))
        time.sleep(0.02)  # widen the window in which a second loader could slip in
        return real_read_idx(path, ndim)

    monkeypatch.setattr(data, "read_idx", slow_read_idx)
    threads = 8
    barrier = threading.Barrier(threads)
    results: list[data.MNIST] = []

    def worker() -> None:
        barrier.wait()
        results.append(get_mnist(tmp_path))

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=10)

    assert len(results) == threads
    assert all(result is results[0] for result in results)
    assert len(reads) == 4
    assert get_mnist(str(tmp_path) + "/.") is results[0]  # keyed by the resolved directory


def test_get_mnist_does_not_cache_failures(tmp_path, small_sizes):
    with pytest.raises(DataError):
        get_mnist(tmp_path)
    write_small_mnist(tmp_path)
    assert get_mnist(tmp_path).train_images.shape == (6, 28, 28)


# ---------------------------------------------------------------- normalize and subset


def test_normalize_matches_torchvision_to_tensor_then_normalize():
    from torchvision import transforms

    images, _ = small_split(3, seed=4)
    images[0, 0, :2] = (0, 255)
    reference = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])

    out = normalize(torch.from_numpy(images))

    assert out.dtype == torch.float32 and out.shape == (3, 1, 28, 28)
    assert torch.equal(out, torch.stack([reference(img) for img in images]))
    assert out[0, 0, 0, 0] == -1.0 and out[0, 0, 0, 1] == 1.0


def test_normalize_shapes_and_dtype_checks():
    image = torch.full((28, 28), 255, dtype=torch.uint8)
    assert normalize(image).shape == (1, 1, 28, 28)
    assert normalize(image[None, None]).shape == (1, 1, 28, 28)
    with pytest.raises(TypeError, match="uint8"):
        normalize(image.float())
    with pytest.raises(ValueError, match="28, 28"):
        normalize(torch.zeros((2, 3, 28, 28), dtype=torch.uint8))


def test_subset_is_seeded_without_replacement_and_aligned():
    images = torch.arange(100).repeat_interleave(4).reshape(100, 2, 2)
    labels = torch.arange(100)

    sub_images, sub_labels = subset(images, labels, 30, seed=3)
    again_images, again_labels = subset(images, labels, 30, seed=3)
    _, other_labels = subset(images, labels, 30, seed=4)

    assert torch.equal(sub_labels, again_labels) and torch.equal(sub_images, again_images)
    assert not torch.equal(sub_labels, other_labels)
    assert len(set(sub_labels.tolist())) == 30
    assert torch.equal(sub_images[:, 0, 0], sub_labels)  # images stay with their labels


def test_subset_full_size_is_everything_in_order():
    images, labels = torch.zeros(5, 28, 28, dtype=torch.uint8), torch.arange(5)
    got_images, got_labels = subset(images, labels, 5, seed=9)
    assert got_images is images and got_labels is labels


@pytest.mark.parametrize("size", [0, -1, 6, 2.5, True])
def test_subset_rejects_bad_sizes(size):
    with pytest.raises(ValueError, match=r"1\.\.5"):
        subset(torch.zeros(5, 28, 28), torch.arange(5), size, seed=0)


def test_subset_rejects_misaligned_inputs():
    with pytest.raises(ValueError, match="5 images but 4 labels"):
        subset(torch.zeros(5, 28, 28), torch.arange(4), 2, seed=0)


# ---------------------------------------------------------------- the real files


@pytest.mark.mnist
def test_real_mnist_shapes_and_types(mnist, mnist_dir):
    assert mnist.train_images.shape == (60_000, 28, 28)
    assert mnist.test_images.shape == (10_000, 28, 28)
    assert mnist.train_labels.shape == (60_000,) and mnist.test_labels.shape == (10_000,)
    assert mnist.train_images.dtype == torch.uint8 and mnist.test_images.dtype == torch.uint8
    assert mnist.train_labels.dtype == torch.int64 and mnist.test_labels.dtype == torch.int64
    assert mnist.source == str(Path(mnist_dir).resolve())


@pytest.mark.mnist
def test_real_mnist_label_counts(mnist):
    train = torch.bincount(mnist.train_labels, minlength=10)
    test = torch.bincount(mnist.test_labels, minlength=10)
    assert len(train) == 10 and len(test) == 10
    assert int(train.sum()) == 60_000 and int(test.sum()) == 10_000
    assert all(5_400 <= int(c) <= 6_800 for c in train), train.tolist()
    assert all(850 <= int(c) <= 1_150 for c in test), test.tolist()
    assert train.tolist()[:2] == [5923, 6742] and test.tolist()[:2] == [980, 1135]


@pytest.mark.mnist
def test_real_mnist_pixel_mean(mnist):
    train_mean = mnist.train_images.double().mean().item() / 255
    test_mean = mnist.test_images.double().mean().item() / 255
    assert train_mean == pytest.approx(0.1307, abs=0.001)
    assert test_mean == pytest.approx(0.1325, abs=0.001)


@pytest.mark.mnist
def test_real_mnist_normalized_range(mnist):
    out = normalize(mnist.test_images[:2000])
    assert out.dtype == torch.float32 and out.shape == (2000, 1, 28, 28)
    assert out.min().item() == -1.0 and out.max().item() == 1.0


@pytest.mark.mnist
def test_real_mnist_subset_determinism(mnist):
    index = torch.arange(60_000)
    _, first = subset(mnist.train_images, index, 1000, seed=0)
    _, same = subset(mnist.train_images, index, 1000, seed=0)
    _, other = subset(mnist.train_images, index, 1000, seed=1)
    assert torch.equal(first, same) and not torch.equal(first, other)
    images, labels = subset(mnist.train_images, mnist.train_labels, 1000, seed=0)
    assert torch.equal(images, mnist.train_images[first])
    assert torch.equal(labels, mnist.train_labels[first])
    assert len(torch.unique(labels)) == 10


@pytest.mark.mnist
def test_real_mnist_is_cached(mnist, mnist_dir):
    assert get_mnist(mnist_dir) is mnist
    assert get_mnist(str(mnist_dir)) is mnist
