"""``folder:PATH``: a user's own images, one folder per class, at their own size (pwmpr.data.own_folder; README,
"Data sets"), on scikit-learn's real 8x8 digits written as PNG files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from runfiles import grow_and_export
from sklearn.datasets import load_digits

from pwmpr.data import load_data
from pwmpr.data.own_folder import MAX_SIDE, image_size
from pwmpr.errors import PwmprError


def _write_digits(root, *, split: bool, n: int | None = None, skip_test_class: int | None = None) -> None:
    """Digits as 8-bit PNGs in ``root/train|test/digit<k>/`` (every fifth to test) or, unsplit, ``root/digit<k>/``."""
    d = load_digits()
    for i, (img, label) in enumerate(zip(d.images[:n], d.target[:n], strict=True)):
        part = ("test" if i % 5 == 0 else "train") if split else ""
        if part == "test" and label == skip_test_class:
            continue
        folder = root / part / f"digit{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((img * 255 / 16).astype(np.uint8)).save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    _write_digits(root, split=True)
    return root


def test_a_split_folder_reads_its_classes_size_and_test_split(digits_folder):
    b = load_data(f"folder:{digits_folder}")
    assert b.num_classes == 10 and b.input_shape == (3, 8, 8) and b.default_model == "cnn"
    assert len(b.test) == 360 and len(b.train) + len(b.val) == 1437
    x, y = b.test[0]  # image 0 of the digits, a 0, is the first test image
    assert x.shape == (3, 8, 8) and y == 0
    # kept whole for evaluation: the pixels are the PNG's, normalised (grey: the three channels agree up to scale)
    png = np.asarray(Image.open(digits_folder / "test" / "digit0" / "0.png"), dtype=np.float32) / 255
    assert torch.allclose(x[0] * 0.229 + 0.485, torch.from_numpy(png), atol=1e-5)


def test_test_labels_follow_the_training_classes_when_the_test_split_lacks_one(tmp_path):
    _write_digits(tmp_path, split=True, n=400, skip_test_class=0)
    b = load_data(f"folder:{tmp_path}")
    assert b.num_classes == 10
    folders = {path.split("/")[-2] for path, _ in b.test.samples}
    assert "digit0" not in folders
    # each test image keeps its own class number (digit9 is 9), not its index among the test split's 9 folders
    assert all(label == int(path.split("/")[-2][-1]) for path, label in b.test.samples)


def test_an_unsplit_folder_holds_out_a_fixed_fifth_as_the_test_split(tmp_path):
    _write_digits(tmp_path, split=False, n=500)
    a, b = load_data(f"folder:{tmp_path}"), load_data(f"folder:{tmp_path}")
    assert len(a.test) == 100 and len(a.train) + len(a.val) == 400
    assert a.test.indices == b.test.indices  # the same split every time
    kept = a.train.dataset  # the training part of the folder, before the validation split
    train_files = {kept.dataset.samples[kept.indices[i]][0] for i in a.train.indices}
    test_files = {a.test.dataset.samples[i][0] for i in a.test.indices}
    assert train_files and not train_files & test_files


def test_images_of_mixed_sizes_are_resized_to_their_median_short_side(tmp_path):
    rng = np.random.default_rng(0)
    for cls, sides in (("a", (20, 30, 40)), ("b", (24, 36, 50))):
        (tmp_path / cls).mkdir()
        for i, side in enumerate(sides):
            Image.fromarray(rng.integers(0, 256, (side, side + 7, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    paths = [str(p) for p in sorted(tmp_path.rglob("*.png"))]
    assert image_size(paths) == (36, False)  # short sides 20 24 30 36 40 50: the upper median
    b = load_data(f"folder:{tmp_path}", val_fraction=0.25)
    assert b.input_shape == (3, 36, 36) and b.default_model == "resnet32"
    for i in range(len(b.test)):
        assert b.test[i][0].shape == (3, 36, 36)
    for i in range(len(b.train)):
        assert b.train[i][0].shape == (3, 36, 36)
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((300, 400, 3), dtype=np.uint8)).save(big)
    assert image_size([str(big)]) == (MAX_SIDE, False)  # one shared size, but too large to keep


def test_an_image_of_another_size_than_the_sampled_ones_is_cropped_or_padded_to_theirs(tmp_path, monkeypatch):
    from pwmpr.data import own_folder

    monkeypatch.setattr(own_folder, "SIZE_SAMPLE", 4)  # of 7 training images, the 1st, 3rd, 5th and 7th
    names = {"a": ["0.png", "1odd.png", "2.png"], "b": ["0.png", "1.png", "2.png", "3.png"]}
    for cls, files in names.items():
        (tmp_path / "train" / cls).mkdir(parents=True)
        (tmp_path / "test" / cls).mkdir(parents=True)
        for f in files:
            Image.new("RGB", (20, 6) if "odd" in f else (12, 10)).save(tmp_path / "train" / cls / f)
        Image.new("RGB", (7, 15)).save(tmp_path / "test" / cls / "odd.png")
    b = load_data(f"folder:{tmp_path}", val_fraction=0.2)
    assert b.input_shape == (3, 10, 12)
    full = b.train.dataset  # the training folder before the validation split
    assert {tuple(full[i][0].shape) for i in range(len(full))} == {(3, 10, 12)}
    assert {tuple(b.test[i][0].shape) for i in range(len(b.test))} == {(3, 10, 12)}


def test_the_size_sample_reaches_the_last_class(tmp_path):
    for cls, side, n in (("a", 32, 70), ("b", 64, 50)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            Image.new("RGB", (side, side)).save(tmp_path / cls / f"{i:03d}.png")
    b = load_data(f"folder:{tmp_path}")
    assert b.input_shape == (3, 32, 32)  # mixed sizes: resized to the short sides' upper median, not cropped
    big = next(i for i, (path, _) in enumerate(b.test.dataset.samples) if "/b/" in path and i in b.test.indices)
    assert b.test.dataset.transform.transforms[0].__class__.__name__ == "Resize"
    assert b.test.dataset[big][0].shape == (3, 32, 32)


def test_hidden_folders_are_not_classes_and_valid_is_a_test_folder(tmp_path):
    _write_digits(tmp_path, split=True, n=100)
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()
    (tmp_path / "train" / "__MACOSX").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "__MACOSX" / "junk.png")
    (tmp_path / "test").rename(tmp_path / "valid")
    b = load_data(f"folder:{tmp_path}")
    assert b.num_classes == 10 and len(b.test) == 20
    assert all(label == int(path.split("/")[-2][-1]) for path, label in b.test.samples)
    assert all("MACOSX" not in path for path, _ in b.train.dataset.samples)


def test_an_imagenet_folder_whose_val_split_lacks_a_class_keeps_the_training_class_numbers(tmp_path):
    _write_digits(tmp_path, split=True, n=400, skip_test_class=0)
    (tmp_path / "test").rename(tmp_path / "val")
    b = load_data("tinyimagenet", str(tmp_path))
    assert b.num_classes == 10
    assert all(label == int(path.split("/")[-2][-1]) for path, label in b.test.samples)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: None, "image folder not found"),
        (lambda root: (root / "only").mkdir(parents=True), "cannot read images from"),
        (lambda root: _write_digits(root, split=False, n=30) or [p.unlink() for p in root.glob("digit[1-9]/*")],
         "cannot read images from"),
        (lambda root: (_write_digits(root, split=True, n=60), (root / "test" / "cat").mkdir(),
                       Image.new("RGB", (8, 8)).save(root / "test" / "cat" / "c.png")),
         r"class\(es\) the training split lacks: cat"),
        (lambda root: (root / "cats").mkdir(parents=True) or Image.new("RGB", (8, 8)).save(root / "cats" / "c.png"),
         "has 1 class folder"),
        (lambda root: [(root / c).mkdir(parents=True) or Image.new("RGB", (8, 8)).save(root / c / "x.png")
                       for c in "ab"], "holds 2 images: too few to hold out a test split"),
    ],
)
def test_bad_folders_give_one_line_errors(tmp_path, make, message):
    root = tmp_path / "data"
    make(root)
    with pytest.raises(PwmprError, match=message):
        load_data(f"folder:{root}")


def test_a_network_grown_on_an_image_folder_learns_and_exports(digits_folder, tmp_path):
    summary, report = grow_and_export(["--data", f"folder:{digits_folder}", "--seed-density", "0.2", "--phase-epochs",
                                       "2", "--final-epochs", "6", "--max-phases", "2", "--workers", "0",
                                       "--no-tau-core", "-q"], tmp_path)
    assert summary["model"] == "cnn" and summary["test_acc"] > 0.6  # chance is a tenth
    assert report["input_shape"] == [3, 8, 8]
    assert all(e["ok"] and e["top1_mismatch"] == 0 for e in report["encodings"].values())


def test_tiny_imagenet_annotations_of_a_class_the_training_split_lacks_are_an_error(tmp_path):
    _write_digits(tmp_path, split=True, n=60)
    (tmp_path / "test").rename(tmp_path / "val_folders")
    images = tmp_path / "val" / "images"
    images.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(images / "v0.png")
    Image.new("RGB", (8, 8)).save(images / "v1.png")
    (tmp_path / "val" / "val_annotations.txt").write_text("v0.png\tdigit3\t0\t0\t8\t8\nv1.png\tzebra\t0\t0\t8\t8\n")
    with pytest.raises(PwmprError, match=r"class\(es\) the training split lacks: zebra"):
        load_data("tinyimagenet", str(tmp_path))
    (tmp_path / "val" / "val_annotations.txt").write_text("v0.png\tdigit3\t0\t0\t8\t8\n")
    b = load_data("tinyimagenet", str(tmp_path))
    assert [label for _, label in b.test.samples] == [3]


def test_hidden_files_are_skipped_dunder_classes_kept_and_a_test_split_may_miss_a_class_folder(tmp_path):
    _write_digits(tmp_path, split=True, n=100)
    (tmp_path / "train" / "digit3" / "._0.png").write_bytes(b"AppleDouble, not a PNG")
    (tmp_path / "train" / "__bg").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "__bg" / "bg.png")
    (tmp_path / "test" / "__bg").mkdir()  # an empty test folder of a class: that class is just not tested
    b = load_data(f"folder:{tmp_path}")
    assert b.num_classes == 11 and b.test.classes[0] == "__bg"
    assert not any(path.endswith("._0.png") for path, _ in b.train.dataset.samples)
    assert all(path.split("/")[-2] != "__bg" for path, _ in b.test.samples)
