"""Every reader of a dataset on disk, on files written here in the exact on-disk format its
source ships (IDX headers plain and gzipped, CIFAR-100's pickled dicts, SVHN's MATLAB files, the
user's npz arrays, a class-per-directory image tree), and scikit-learn's digits; and what each
refuses before any job."""

import gzip
import pickle

import numpy as np
import pytest
from helpers import snakemake

from kdflow import data, dataset_files
from kdflow.config import ConfigError, check_config

RNG = np.random.default_rng(0)


def write_idx(path, array, gz=False):
    """LeCun's IDX: 0, 0, the type (0x08 unsigned byte), the number of dims, big-endian dims, data."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    blob = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        blob = gzip.compress(blob)
    path.write_bytes(blob)


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_from_idx_files_plain_or_gzipped(tmp_path, gz):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    imgs = RNG.integers(0, 256, (6, 28, 28))
    write_idx(raw / "train-images-idx3-ubyte", imgs, gz)
    write_idx(raw / "train-labels-idx1-ubyte", np.arange(6) % 10, gz)
    write_idx(raw / "t10k-images-idx3-ubyte", imgs[:2], gz)
    write_idx(raw / "t10k-labels-idx1-ubyte", np.array([9, 1]), gz)
    d = data.LOADERS["fashion_mnist"](tmp_path, 0)
    assert d.x_train.shape == (6, 1, 28, 28) and d.x_test.shape == (2, 1, 28, 28)
    np.testing.assert_array_equal(d.x_train[3, 0], imgs[3])
    assert d.y_test.tolist() == [9, 1] and d.y_train.dtype == np.int64


def test_a_truncated_idx_file_says_so(tmp_path):
    path = tmp_path / "x"
    write_idx(path, RNG.integers(0, 256, (3, 4, 4)))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match="truncated"):
        data.mnist.read_idx(path)


def test_cifar100_from_its_pickles_with_the_fine_labels(tmp_path):
    base = tmp_path / "cifar-100-python"
    base.mkdir()
    parts = {}
    for name, n in (("train", 7), ("test", 3)):
        rows = RNG.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine, coarse = list(RNG.integers(0, 100, n)), list(RNG.integers(0, 20, n))
        # the keys the official files hold (python 2 pickles read with latin1, as torchvision does)
        batch = {"filenames": [f"{i}.png" for i in range(n)], "batch_label": name, "fine_labels": fine,
                 "coarse_labels": coarse, "data": rows}  # fmt: skip
        with open(base / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
        parts[name] = (rows, fine)
    d = data.LOADERS["cifar100"](tmp_path, 0)
    assert d.x_train.shape == (7, 3, 32, 32) and d.x_test.shape == (3, 3, 32, 32)
    assert d.y_train.tolist() == parts["train"][1]  # fine, not coarse
    # rows are the R plane, then G, then B, each 32x32 row-major
    np.testing.assert_array_equal(d.x_test[1, 2, 0, :3], parts["test"][0][1, 2048:2051])


def test_svhn_from_its_mat_files_with_ten_as_zero(tmp_path):
    from scipy.io import savemat

    parts = {}
    for name, n in (("train", 5), ("test", 2)):
        x = RNG.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)  # the .mat layout: H, W, C, N
        y = np.array([[10], [1], [2], [3], [9]][:n], dtype=np.uint8)  # 10 is the digit 0
        savemat(tmp_path / f"{name}_32x32.mat", {"X": x, "y": y})
        parts[name] = x
    d = data.LOADERS["svhn"](tmp_path, 0)
    assert d.x_train.shape == (5, 3, 32, 32) and d.y_train.tolist() == [0, 1, 2, 3, 9]
    np.testing.assert_array_equal(d.x_train[4, 1], parts["train"][:, :, 1, 4])


@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "NHW"])
def test_npz_images_in_either_layout(tmp_path, layout):
    shape = {"NCHW": (4, 3, 6, 5), "NHWC": (4, 6, 5, 3), "NHW": (4, 6, 5)}[layout]
    x = RNG.integers(0, 256, shape, dtype=np.uint8)
    np.savez(tmp_path / "train.npz", x=x, y=np.array([0, 1, 2, 1]))
    np.savez(tmp_path / "test.npz", x=x[:2], y=np.array([2, 0]))
    d = data.LOADERS["npz"](tmp_path, 0)
    channels = 1 if layout == "NHW" else 3
    assert d.x_train.shape == (4, channels, 6, 5)
    assert dataset_files.npz_image_shape(tmp_path) == (channels, 6, 5)  # from the header alone
    want = {"NCHW": lambda: x[2, 1], "NHWC": lambda: x[2, :, :, 1], "NHW": lambda: x[2]}[layout]()
    np.testing.assert_array_equal(d.x_train[2, 1 if channels == 3 else 0], want)
    assert d.y_test.tolist() == [2, 0]


@pytest.mark.parametrize(
    "train,test,says",
    [
        ({"x": np.zeros((4, 6, 5, 2), np.uint8), "y": np.zeros(4, int)}, None, "allowed: (N, C, H, W)"),
        ({"x": np.zeros((4, 1, 6, 5), np.float32), "y": np.zeros(4, int)}, None, "allowed: uint8"),
        ({"x": np.zeros((4, 1, 6, 5), np.uint8), "y": np.zeros(3, int)}, None, "y must be 4 integer labels"),
        ({"x": np.zeros((4, 1, 6, 5), np.uint8)}, None, "needs arrays 'x' and 'y'"),
        (
            {"x": np.zeros((4, 1, 6, 5), np.uint8), "y": np.array([0, 1, -1, 0])},
            None,
            "labels must lie in 0..1",
        ),
        (None, {"x": np.zeros((2, 1, 6, 5), np.uint8), "y": np.array([0, 5])}, "labels must lie in 0..2"),
        (None, {"x": np.zeros((2, 1, 7, 5), np.uint8), "y": np.array([0, 1])}, "train images are (1, 6, 5)"),
    ],
)
def test_a_bad_npz_is_refused_naming_what_is_wrong(tmp_path, train, test, says):
    good = {"x": np.zeros((3, 1, 6, 5), np.uint8), "y": np.array([0, 1, 2])}
    np.savez(tmp_path / "train.npz", **(train or good))
    np.savez(tmp_path / "test.npz", **(test or {"x": good["x"][:2], "y": good["y"][:2]}))
    with pytest.raises(ValueError, match=f"^{tmp_path}.*{says.replace('(', '.').replace(')', '.')}"):
        dataset_files.check_npz(tmp_path)


def test_an_image_folder_is_decoded_once_resized_and_its_classes_sorted(tmp_path):
    from PIL import Image

    colours = {"cat": (255, 0, 0), "ant": (0, 0, 255)}
    for part, n in (("train", 3), ("test", 1)):
        for name, rgb in colours.items():
            (tmp_path / part / name).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (20, 10), rgb).save(tmp_path / part / name / f"{i}.png")
    (tmp_path / "train" / "ant" / "notes.txt").write_text("not an image")
    d = data.LOADERS["imagefolder"](tmp_path, 0, image_size=(8, 6))
    assert d.x_train.shape == (6, 3, 8, 6) and d.x_test.shape == (2, 3, 8, 6)
    assert d.y_train.tolist() == [0, 0, 0, 1, 1, 1]  # ant (blue) = 0, cat (red) = 1
    np.testing.assert_array_equal(d.x_train[0, :, 0, 0], [0, 0, 255])
    np.testing.assert_array_equal(d.x_test[1, :, 4, 3], [255, 0, 0])


def test_digits_ship_with_scikit_learn_and_split_once_by_seed():
    from sklearn.datasets import load_digits

    a, b, other = (
        data.LOADERS["digits"](None, 42),
        data.LOADERS["digits"](None, 42),
        data.LOADERS["digits"](None, 7),
    )
    assert a.x_train.shape[1:] == (1, 8, 8) and len(a.y_train) + len(a.y_test) == 1797
    assert np.array_equal(a.y_test, b.y_test) and not np.array_equal(a.x_test, other.x_test)
    counts = np.bincount(a.y_test, minlength=10)
    assert (abs(counts - 0.2 * np.bincount(load_digits().target)) <= 1).all()  # stratified 20 %
    assert a.x_train.dtype == np.uint8 and a.x_train.max() == 255 and a.x_train.min() == 0
    levels = np.unique(np.concatenate([a.x_train.ravel(), a.x_test.ravel()]))
    assert len(levels) == 17  # scikit-learn's 0-16 intensities, each its own uint8 value
    np.testing.assert_array_equal(levels, np.rint(np.arange(17) * 255 / 16))


def dataset_config(name, root=None, **extra):
    ds = {"name": name, **({"root": str(root)} if root else {}), **extra}
    models = {"t": {"family": "cnn2d", "channels": 4, "layers": 1}, "s": {"family": "mlp", "hidden": [4]}}
    return {"dataset": ds, "models": models, "pairs": [{"teacher": "t", "student": "s"}]}


@pytest.mark.parametrize(
    "name", ["mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "npz", "imagefolder"]
)
def test_a_root_without_the_files_lists_them_and_how_to_get_them(tmp_path, name):
    extra = {"image_size": [8, 8]} if name == "imagefolder" else {}
    with pytest.raises(ConfigError) as e:
        check_config(dataset_config(name, tmp_path, **extra))
    text = str(e.value)
    assert text.startswith("config key 'dataset.root'") and dataset_files.EXPECTED[name][0] in text
    if name not in ("npz", "imagefolder"):
        assert "download=True" in text  # the torchvision line that fetches them


def test_image_size_only_and_always_for_an_image_folder(tmp_path):
    for part in ("train", "test"):
        (tmp_path / part).mkdir()
    with pytest.raises(ConfigError, match="'dataset.image_size': imagefolder needs"):
        check_config(dataset_config("imagefolder", tmp_path))
    with pytest.raises(ConfigError, match="'dataset.image_size': only imagefolder"):
        check_config(dataset_config("digits", image_size=[8, 8]))


@pytest.mark.slow
def test_digits_end_to_end_with_a_cnn_teacher_and_an_mlp_student(tmp_path):
    from helpers import ok

    config = {
        **dataset_config("digits"),
        "experiment": "digits",
        "methods": ["kd"],
        "seeds": [0],
        "train": {"epochs": 3},
        "tuning": {"enabled": False},
        "tracking": {"enabled": False},
    }
    ok(snakemake(tmp_path, config, "--cores", "2"))
    report = (tmp_path / "results" / "digits" / "report.md").read_text()
    assert "| t → s |" in report and "| kd |" in report


def test_a_family_too_deep_for_the_images_is_refused_before_any_job(tmp_path):
    for part in ("train", "test"):  # 6x6 images: three 2x2 max-pools would leave nothing
        np.savez(tmp_path / f"{part}.npz", x=np.zeros((4, 3, 6, 6), np.uint8), y=np.array([0, 1, 0, 1]))
    cfg = dataset_config("npz", tmp_path)
    cfg["models"]["t"] = {"family": "vgg8"}
    with pytest.raises(
        ConfigError, match=r"'models.t.family': family 'vgg8' halves its input 3 times .* got 6x6"
    ):
        check_config(cfg)
    cfg["models"]["t"] = {"family": "resnet8"}  # strided convs: any size runs
    check_config(cfg)
