"""``torchvision:NAME``: any image-classification data set torchvision ships, by its class name
(pwmpr.data.torchvision_any; README, "Data sets"). Offline: scikit-learn's real digits written in the files torchvision
reads (FashionMNIST's idx files; GTSRB's folders of .ppm images and its test CSV), and torchvision's FakeData."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from runfiles import grow_and_export
from sklearn.datasets import load_digits

from pwmpr._tv_compat import import_torchvision
from pwmpr.data import load_data
from pwmpr.errors import PwmprError


def _idx(path, array: np.ndarray) -> None:
    """``array`` (uint8) as an idx file: images (magic 2051) or labels (2049)."""
    magic = 2051 if array.ndim == 3 else 2049
    with open(path, "wb") as fh:
        fh.write(magic.to_bytes(4, "big"))
        for dim in array.shape:
            fh.write(int(dim).to_bytes(4, "big"))
        fh.write(array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def fashion_root(tmp_path_factory):
    """Digits as FashionMNIST's raw files: every fifth image in the test files (t10k), the others in train."""
    root = tmp_path_factory.mktemp("tv")
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    d = load_digits()
    images, labels = (d.images * 255 / 16).astype(np.uint8), d.target.astype(np.uint8)
    test = np.arange(len(labels)) % 5 == 0
    for part, keep in (("train", ~test), ("t10k", test)):
        _idx(raw / f"{part}-images-idx3-ubyte", images[keep])
        _idx(raw / f"{part}-labels-idx1-ubyte", labels[keep])
    return root


def test_a_data_set_with_a_train_flag_reads_both_splits_in_rgb(fashion_root):
    b = load_data("torchvision:fashionmnist", str(fashion_root))  # any spelling of the class name
    assert b.name == "torchvision:FashionMNIST" and b.num_classes == 10
    assert b.input_shape == (3, 8, 8) and b.default_model == "cnn"
    assert len(b.test) == 360 and len(b.train) + len(b.val) == 1437
    x, y = b.test[1]  # the second test image is digits' image 5, a 5
    assert y == 5 and x.shape == (3, 8, 8)
    pixels = torch.from_numpy(load_digits().images[5] * 255 / 16).to(torch.uint8).float() / 255
    assert torch.allclose(x[0] * 0.229 + 0.485, pixels, atol=1e-5)  # kept whole, grey in every channel
    assert torch.allclose(x[1] * 0.224 + 0.456, pixels, atol=1e-5)


def test_a_data_set_with_a_split_argument_reads_train_and_test_and_resizes_mixed_sizes(tmp_path):
    base = tmp_path / "gtsrb"
    rng = np.random.default_rng(0)
    for label in range(3):
        folder = base / "GTSRB" / "Training" / f"{label:05d}"
        folder.mkdir(parents=True)
        for i in range(6):
            side = 20 + 4 * i
            Image.fromarray(rng.integers(0, 256, (side, side + 3, 3), dtype=np.uint8)).save(folder / f"{i}.ppm")
    test = base / "GTSRB" / "Final_Test" / "Images"
    test.mkdir(parents=True)
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for i, label in enumerate((2, 0, 1, 2)):
        Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(test / f"{i:05d}.ppm")
        rows.append(f"{i:05d}.ppm;30;30;0;0;30;30;{label}")
    (base / "GT-final_test.csv").write_text("\n".join(rows) + "\n")
    b = load_data("torchvision:GTSRB", str(tmp_path), val_fraction=0.2)
    assert b.num_classes == 3  # GTSRB keeps no class list: the largest label + 1
    assert b.input_shape == (3, 32, 32)  # short sides 20..40 by 4, three of each: the upper median
    assert [b.test[i][1] for i in range(4)] == [2, 0, 1, 2]  # the test split's labels, from its CSV
    assert {tuple(b.train[i][0].shape) for i in range(len(b.train))} == {(3, 32, 32)}


def test_a_data_set_with_one_split_holds_out_a_fixed_fifth():
    a, b = load_data("torchvision:FakeData"), load_data("torchvision:FakeData")
    assert len(a.test) == 200 and len(a.train) + len(a.val) == 800 and a.num_classes == 10
    assert a.test.indices == b.test.indices
    assert not set(a.test.indices) & {a.train.dataset.indices[i] for i in a.train.indices}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Fashion", "torchvision has no data set 'Fashion'"),
        ("", "torchvision has no data set ''"),
        ("EMNIST", r"EMNIST needs split: pass it as --data torchvision:EMNIST:split=VALUE"),
        ("FakeData:size", r"'size' is not KEY=VALUE; pass constructor arguments as torchvision:FakeData:KEY=VALUE"),
        ("EMNIST:root=elsewhere", "pwmpr decides root itself"),
        ("EMNIST:train=false", "pwmpr decides train itself"),
        ("FakeData:root=elsewhere", "FakeData takes no argument 'root'"),
        ("SUN397:split=train", "SUN397 takes no argument 'split'; it takes no arguments of its own"),
        ("FakeData:colour=3", r"FakeData takes no argument 'colour'; it takes image_size, num_classes, "
                              r"random_offset, size"),
        ("FakeData:size=5,size=6", "size is given twice"),
        ("EMNIST:split=greek", r"cannot load torchvision's EMNIST: Unknown value 'greek' for argument split"),
        ("CocoDetection", "needs annFile"),
    ],
)
def test_what_torchvision_cannot_give_is_one_line_errors(name, message):
    with pytest.raises(PwmprError, match=message):
        load_data(f"torchvision:{name}")


def test_constructor_arguments_follow_the_name(tmp_path):
    # EMNIST's letters (labels 1..26 of 27 classes, "N/A" first) made of the digits, labelled 1..10, in its raw files
    raw = tmp_path / "EMNIST" / "raw"
    raw.mkdir(parents=True)
    d = load_digits()
    images, labels = (d.images * 255 / 16).astype(np.uint8), (d.target + 1).astype(np.uint8)
    test = np.arange(len(labels)) % 5 == 0
    for part, keep in (("train", ~test), ("test", test)):
        _idx(raw / f"emnist-letters-{part}-images-idx3-ubyte", images[keep])
        _idx(raw / f"emnist-letters-{part}-labels-idx1-ubyte", labels[keep])
    b = load_data("torchvision:emnist:split=letters", str(tmp_path))
    assert b.name == "torchvision:EMNIST:split=letters" and b.num_classes == 27
    assert len(b.test) == 360 and len(b.train) + len(b.val) == 1437  # train=True/False: its own test split
    assert [b.test[i][1] for i in range(3)] == [1, 6, 1]  # digits 0, 5, 0 (images 0, 5, 10), as letters 1, 6, 1
    # numbers are read as numbers: FakeData of 50 images of 3 classes
    f = load_data("torchvision:FakeData:size=50,num_classes=3,random_offset=7")
    assert f.name == "torchvision:FakeData:size=50,num_classes=3,random_offset=7"
    assert len(f.test) == 10 and len(f.train) + len(f.val) == 40 and f.num_classes == 3


def test_values_are_read_as_booleans_none_and_numbers_else_as_text():
    from pwmpr.data.torchvision_args import arguments, literal

    assert [literal(t) for t in ("true", "False", "None", "3", "0.5", "1e3", "letters")] == \
        [True, False, None, 3, 0.5, 1000.0, "letters"]
    inaturalist = import_torchvision().datasets.INaturalist  # version: "2021_train" by default, or "2017"...
    assert arguments(inaturalist, "version=2019") == {"version": "2019"}  # text, as the parameter takes


def test_only_arguments_handed_on_through_kwargs_count_as_a_base_class_s():
    from pwmpr.data.torchvision_args import parameters

    tv = import_torchvision()
    assert {"train", "download", "split"} <= set(parameters(tv.datasets.EMNIST))  # MNIST's, through **kwargs
    # ImageNet's **kwargs reach ImageFolder, whose __init__ takes no **kwargs: DatasetFolder's extensions never come
    assert set(parameters(tv.datasets.ImageNet)) == {"root", "split", "transform", "target_transform", "loader",
                                                     "is_valid_file", "allow_empty"}


class _Kept(torch.utils.data.Dataset):
    """A data set of 300 images that keeps its labels in lists of its own, and counts the samples read."""

    def __init__(self, labels: list[int], **lists) -> None:
        self._truth, self.reads = dict(enumerate(labels)), 0  # a mapping: no label list of its own
        for name, value in lists.items():
            setattr(self, name, value)

    def __len__(self) -> int:
        return len(self._truth)

    def __getitem__(self, i):
        self.reads += 1
        return Image.new("RGB", (4, 4)), self._truth[i]


def test_labels_come_from_a_list_the_data_set_keeps_once_the_samples_confirm_it():
    from pwmpr.data.torchvision_any import _labels

    truth = [(7 * i) % 5 for i in range(300)]
    # Caltech's layout: the image numbers (index, which the samples contradict) beside the labels (y)
    caltech = _Kept(truth, index=list(range(1, 301)), y=list(truth))
    assert _labels(caltech) == truth and caltech.reads <= 64  # a sample of the images, not all 300
    # Omniglot's: (file name, class) pairs
    omniglot = _Kept(truth, _flat_character_images=[(f"{i}.png", y) for i, y in enumerate(truth)])
    assert _labels(omniglot) == truth and omniglot.reads <= 64
    # a list that disagrees with the samples at one index is not the labels: every sample is read instead
    wrong = list(truth)
    wrong[299] = (wrong[299] + 1) % 5  # the last index is among those read
    stale = _Kept(truth, y=wrong)
    assert _labels(stale) == truth and stale.reads >= 300


def test_odd_attributes_are_no_label_lists_and_break_nothing():
    from pwmpr.data.torchvision_any import _labels

    truth = [i % 3 for i in range(100)]
    odd = _Kept(truth, scalar=np.array(5), ids=set(range(100)), kind=int, name="x" * 100)
    assert _labels(odd) == truth and odd.reads >= 100  # nothing there is a label list: every sample is read


def test_labels_outside_the_named_classes_are_one_line(monkeypatch):
    from pwmpr.data.torchvision_any import _classes

    named = _Kept([-1] * 50, classes=["a", "b", "c"])  # STL10's unlabeled split: every label -1
    with pytest.raises(PwmprError, match=r"names 3 classes but gives label\(s\) -1: a classifier needs class "
                                         r"numbers 0..2 \(an unlabelled split, say\)"):
        _classes(named, None)
    assert _classes(_Kept([i % 3 for i in range(50)], classes=["a", "b", "c"]), None) == 3


def test_a_data_set_whose_targets_are_not_class_numbers_is_refused(monkeypatch):
    from pwmpr.data import torchvision_any

    class Boxes(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return Image.new("RGB", (8, 8)), {"boxes": []}

    monkeypatch.setattr(torchvision_any, "_splits", lambda cls, root, download, given: (Boxes(), None))
    with pytest.raises(PwmprError, match="gives dict targets, not class numbers"):
        load_data("torchvision:FakeData")


def test_a_data_set_of_tensors_rather_than_images_is_refused(monkeypatch):
    from pwmpr.data import torchvision_any

    monkeypatch.setattr(torchvision_any, "_splits",
                        lambda cls, root, download, given: ([(torch.zeros(3, 8, 8), 0),
                                                             (torch.ones(3, 8, 8), 1)] * 3, None))
    with pytest.raises(PwmprError, match="gives Tensor samples, not images"):
        load_data("torchvision:FakeData")


def test_one_label_everywhere_is_refused(monkeypatch):
    from pwmpr.data import torchvision_any

    class Same(torch.utils.data.Dataset):
        targets = [0, 0, 0, 0]

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return Image.new("RGB", (8, 8)), 0

    monkeypatch.setattr(torchvision_any, "_splits", lambda cls, root, download, given: (Same(), None))
    with pytest.raises(PwmprError, match="at least 2 classes"):
        load_data("torchvision:FakeData")


class _Fake(torch.utils.data.Dataset):
    """A torchvision-like data set: splits ``all`` (its default, as LFWPeople's 10fold), ``train`` and ``val``; it
    refuses ``download=True`` outright (as LFWPeople does) unless ``DOWNLOADS`` is set, and finds no files until it
    downloaded when ``FILES`` is unset."""

    classes = ["a", "b"]
    FILES, DOWNLOADS, TEST_LABELS, NEW_CLASSES, SPLITS = True, False, True, False, ("all", "train", "val")
    SAME = False  # its val split is its train split (QMNIST's train flag, overridden by a given `what`)
    downloads: list[str] = []

    def __init__(self, root, split="all", transform=None, download=False):
        if split not in self.SPLITS:
            raise ValueError(f"Unknown value '{split}' for argument split. Valid values are {{all, train, val}}.")
        if download:
            if not self.DOWNLOADS:
                raise ValueError("this data set is no longer available for download")
            type(self).downloads.append(split)
            type(self).FILES = True
        if not self.FILES:
            raise RuntimeError("Dataset not found. You can use download=True to download it")
        self.split = "train" if self.SAME and split == "val" else split

    def __len__(self):
        return {"all": 40, "train": 20, "val": 6, "test": 5}[self.split]

    def __getitem__(self, i):
        label = None if self.split == "test" or (self.split == "val" and not self.TEST_LABELS) else i % 2
        if self.split == "val" and self.NEW_CLASSES and label is not None:
            label += 2  # LFWPeople: its test people are not its training people
        return Image.new("RGBA", (8, 8), color=(i, 0, 0, 255)), label  # 4 channels, read as RGB


@pytest.fixture
def fake(monkeypatch):
    from pwmpr.data import torchvision_any

    cls = type("Fake", (_Fake,), {"downloads": []})
    monkeypatch.setattr(torchvision_any, "_class", lambda name: cls)
    return cls


def test_the_train_and_val_splits_are_read_from_the_files_there_without_a_download(fake, tmp_path):
    b = load_data("torchvision:Fake", str(tmp_path), val_fraction=0.2)
    assert len(b.test) == 6 and len(b.train) + len(b.val) == 20  # train, not the default split of everything
    assert b.input_shape == (3, 8, 8) and b.test[0][0].shape == b.train[0][0].shape == (3, 8, 8)
    assert fake.downloads == []


def test_missing_files_are_downloaded_where_the_class_can(fake, tmp_path):
    fake.FILES, fake.DOWNLOADS = False, True
    b = load_data("torchvision:Fake", str(tmp_path), val_fraction=0.2)
    assert fake.downloads == ["train"] and len(b.test) == 6


def test_missing_files_that_cannot_be_downloaded_are_one_line(fake, tmp_path):
    fake.FILES = False
    with pytest.raises(PwmprError, match=r"\(Dataset not found\) nor download it \(this data set is no longer"):
        load_data("torchvision:Fake", str(tmp_path))


def test_a_test_split_without_labels_gives_way_to_a_held_out_fifth(fake, tmp_path, caplog):
    fake.TEST_LABELS = False
    with caplog.at_level("WARNING", logger="pwmpr.data.torchvision_any"):
        b = load_data("torchvision:Fake", str(tmp_path), val_fraction=0.25)
    assert len(b.test) == 4 and len(b.train) + len(b.val) == 16 and "has no labels" in caplog.text


def test_a_test_split_of_classes_the_training_split_lacks_gives_way_to_a_held_out_fifth(fake, tmp_path, caplog):
    fake.NEW_CLASSES = True
    with caplog.at_level("WARNING", logger="pwmpr.data.torchvision_any"):
        b = load_data("torchvision:Fake", str(tmp_path), val_fraction=0.25)
    assert len(b.test) == 4 and "holds classes its training split lacks" in caplog.text


def test_a_test_split_that_holds_the_training_samples_gives_way_to_a_held_out_fifth(fake, tmp_path, caplog):
    fake.SAME = True
    with caplog.at_level("WARNING", logger="pwmpr.data.torchvision_any"):
        b = load_data("torchvision:Fake", str(tmp_path), val_fraction=0.25)
    assert len(b.test) == 4 and len(b.train) + len(b.val) == 16
    assert "its split 'val' is the training split itself" in caplog.text


def test_an_unlabelled_test_split_gives_way_to_a_labelled_val_split(fake, tmp_path, caplog):
    fake.SPLITS = ("all", "train", "val", "test")
    with caplog.at_level("WARNING", logger="pwmpr.data.torchvision_any"):
        b = load_data("torchvision:Fake", str(tmp_path), val_fraction=0.2)
    assert len(b.test) == 6 and "its split 'test' has no labels" in caplog.text


def test_a_data_set_without_a_train_split_trains_on_its_default_split(fake, tmp_path):
    fake.SPLITS = ("all", "val")  # Places365: train-standard (its default), val, test
    b = load_data("torchvision:Fake", str(tmp_path), val_fraction=0.2)
    assert len(b.train) + len(b.val) == 40 and len(b.test) == 6


def test_a_split_given_after_the_name_is_the_one_trained_on_with_a_fifth_held_out(fake, tmp_path):
    b = load_data("torchvision:Fake:split=all", str(tmp_path), val_fraction=0.25)
    assert b.name == "torchvision:Fake:split=all"
    assert len(b.test) == 8 and len(b.train) + len(b.val) == 32  # all 40, not the train split's 20


def test_a_download_flag_counts_where_kwargs_hand_it_to_a_base_class():
    from pwmpr._tv_compat import import_torchvision
    from pwmpr.data.torchvision_args import downloads

    tv = import_torchvision()
    assert downloads(tv.datasets.FashionMNIST) and downloads(tv.datasets.QMNIST)  # QMNIST's **kwargs to MNIST
    assert not downloads(tv.datasets.ImageNet)  # its **kwargs go to ImageFolder, which cannot download


def test_a_missing_package_and_a_base_class_are_one_line(monkeypatch):
    from pwmpr.data import torchvision_any

    with pytest.raises(PwmprError, match="torchvision has no data set 'VisionDataset'"):
        load_data("torchvision:VisionDataset")

    class NeedsLmdb:
        def __init__(self, root):
            raise ModuleNotFoundError("No module named 'lmdb'")

    monkeypatch.setattr(torchvision_any, "_class", lambda name: NeedsLmdb)
    with pytest.raises(PwmprError, match="needs a package that is not installed: No module named 'lmdb'"):
        load_data("torchvision:NeedsLmdb")

    class NeedsScipy:  # StanfordCars' way: a RuntimeError that says what to install, and no retry to download
        def __init__(self, root, download=False):
            if download:
                raise AssertionError("downloaded")
            raise RuntimeError("Scipy is not found. This dataset needs to have scipy installed: pip install scipy")

    monkeypatch.setattr(torchvision_any, "_class", lambda name: NeedsScipy)
    with pytest.raises(PwmprError, match="needs a package that is not installed: Scipy is not found"):
        load_data("torchvision:NeedsScipy")


def test_a_network_grown_on_a_torchvision_data_set_learns_and_exports(fashion_root, tmp_path):
    summary, report = grow_and_export(["--data", "torchvision:FashionMNIST", "--data-dir", str(fashion_root),
                                       "--seed-density", "0.2", "--phase-epochs", "2", "--final-epochs", "6",
                                       "--max-phases", "2", "--workers", "0", "--no-tau-core", "-q"], tmp_path)
    assert summary["model"] == "cnn" and summary["test_acc"] > 0.6  # chance is a tenth
    assert report["input_shape"] == [3, 8, 8]
    assert all(e["ok"] and e["top1_mismatch"] == 0 for e in report["encodings"].values())
