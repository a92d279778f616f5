"""Data sets: the offline real digits, npz files (good and bad), splits, on-device augmentation."""

import numpy as np
import pytest
import torch

from pwmpr.data import TensorLoader, TensorSplit, crop_pad, load_data
from pwmpr.errors import PwmprError


def test_mnist5k_is_real_offline_data_with_disjoint_splits():
    b = load_data("mnist5k")
    assert (b.num_classes, b.input_shape) == (10, (1, 28, 28))
    assert (len(b.train), len(b.val), len(b.test)) == (3600, 400, 1000)
    rows = {tuple(r.tolist()) for r in b.train.x.flatten(1)[:, ::7]}
    assert not any(tuple(r.tolist()) in rows for r in b.val.x.flatten(1)[:, ::7])


def test_digits_and_max_train():
    b = load_data("digits", max_train=100)
    assert b.input_shape == (1, 8, 8) and len(b.train) == 100


def test_npz_flat_and_image_arrays(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "flat.npz", x=rng.normal(size=(50, 7)), y=rng.integers(0, 3, 50))
    b = load_data(f"npz:{tmp_path / 'flat.npz'}")
    assert b.input_shape == (7,) and b.default_model == "mlp" and len(b.test) == 10
    np.savez(tmp_path / "img.npz", x=rng.normal(size=(40, 2, 5, 5)), y=rng.integers(0, 4, 40),
             x_test=rng.normal(size=(8, 2, 5, 5)), y_test=rng.integers(0, 4, 8))
    b = load_data(f"npz:{tmp_path / 'img.npz'}")
    assert b.input_shape == (2, 5, 5) and len(b.test) == 8 and b.default_model == "cnn"


def test_npz_images_stored_channels_last_load_as_the_same_images_channels_first(tmp_path, caplog):
    rng = np.random.default_rng(0)
    x, xt = rng.normal(size=(40, 3, 6, 5)), rng.normal(size=(8, 3, 6, 5))
    y, yt = rng.integers(0, 4, 40), rng.integers(0, 4, 8)
    np.savez(tmp_path / "first.npz", x=x, y=y, x_test=xt, y_test=yt)
    np.savez(tmp_path / "last.npz", x=x.transpose(0, 2, 3, 1), y=y, x_test=xt.transpose(0, 2, 3, 1), y_test=yt)
    first = load_data(f"npz:{tmp_path / 'first.npz'}")
    with caplog.at_level("WARNING", logger="pwmpr.data.npz"):
        last = load_data(f"npz:{tmp_path / 'last.npz'}")
    assert last.input_shape == first.input_shape == (3, 6, 5)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(last, split).x, getattr(first, split).x)
    assert [r.getMessage().count("channels-last") for r in caplog.records] == [1]  # said once, not for x_test
    np.savez(tmp_path / "two.npz", x=rng.normal(size=(30, 2, 8, 3)), y=rng.integers(0, 2, 30))  # 2 channels, 8x3
    assert load_data(f"npz:{tmp_path / 'two.npz'}").input_shape == (2, 8, 3)


def test_npz_square_signals_stay_signals_with_a_hint_about_grayscale_images(tmp_path, caplog):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "sq.npz", x=rng.normal(size=(30, 8, 8)), y=rng.integers(0, 2, 30))
    with caplog.at_level("WARNING", logger="pwmpr.data.npz"):
        b = load_data(f"npz:{tmp_path / 'sq.npz'}")
    assert b.input_shape == (8, 8)
    assert "(N, 1, H, W)" in caplog.text
    caplog.clear()
    np.savez(tmp_path / "sig.npz", x=rng.normal(size=(30, 3, 8)), y=rng.integers(0, 2, 30))
    with caplog.at_level("WARNING", logger="pwmpr.data.npz"):
        assert load_data(f"npz:{tmp_path / 'sig.npz'}").input_shape == (3, 8)
    assert caplog.text == ""


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((20, 3))}, "lacks array.*y"),
        ({"x": np.zeros((20, 3)), "y": np.zeros(19, dtype=int)}, "20 samples but 'y' has 19"),
        ({"x": np.zeros((20, 3)), "y": np.full(20, 0.5)}, "integer class labels"),
        ({"x": np.zeros((20, 3, 3, 3, 3)), "y": np.zeros(20, dtype=int)}, r"\(N, D\), \(N, C, L\) or \(N, C, H, W\)"),
        ({"x": np.zeros((20, 3)), "y": np.zeros(20, dtype=int), "x_test": np.zeros((4, 3))}, "both x_test and y_test"),
    ],
)
def test_bad_npz_files_give_clear_errors(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(PwmprError, match=message):
        load_data(f"npz:{tmp_path / 'bad.npz'}")


def test_missing_files_and_folders_name_what_is_missing(tmp_path):
    with pytest.raises(PwmprError, match="npz file not found"):
        load_data(f"npz:{tmp_path / 'none.npz'}")
    with pytest.raises(PwmprError, match="needs --data-dir"):
        load_data("tinyimagenet")
    with pytest.raises(PwmprError, match="train/ and val/"):
        load_data("imagenet", str(tmp_path))
    with pytest.raises(PwmprError, match="unknown data set 'cifar11'"):
        load_data("cifar11")


def test_crop_flip_gives_shifted_or_flipped_crops_of_the_padded_image():
    x = torch.arange(2 * 6 * 6, dtype=torch.float32).view(1, 2, 6, 6).repeat(16, 1, 1, 1)
    loader = TensorLoader(TensorSplit(x, torch.zeros(16, dtype=torch.long)), 16, torch.device("cpu"), shuffle=True,
                          augment="crop-flip", generator=torch.Generator().manual_seed(0))
    (batch, _), = list(loader)
    pad = crop_pad(6, 6)  # an eighth of the side, at least 1
    padded = torch.nn.functional.pad(x[0], (pad, pad, pad, pad))
    crops = [padded[:, i:i + 6, j:j + 6] for i in range(2 * pad + 1) for j in range(2 * pad + 1)]
    crops += [c.flip(2) for c in crops]
    for img in batch:
        assert any(torch.equal(img, c) for c in crops)
    assert len({tuple(img.flatten().tolist()) for img in batch}) > 1


def test_a_relative_data_path_is_read_under_data_dir_when_it_does_not_exist_as_given(tmp_path, monkeypatch):
    from pwmpr.data import data_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "corpus.txt").write_text("x")
    assert data_path("corpus.txt", str(tmp_path / "store")) == tmp_path / "store" / "corpus.txt"
    (tmp_path / "corpus.txt").write_text("here")  # a path that exists as given is taken as given
    assert data_path("corpus.txt", str(tmp_path / "store")).resolve() == (tmp_path / "corpus.txt").resolve()
    absolute = str(tmp_path / "elsewhere.txt")
    assert data_path(absolute, str(tmp_path / "store")) == tmp_path / "elsewhere.txt"
