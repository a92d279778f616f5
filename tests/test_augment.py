"""``--augment``: what training sees of an image (pwmpr.data.AUGMENTS; README, "Data sets"). Crops are cut from a
zero padding of an eighth of the short side; ``crop`` never mirrors, ``none`` trains on the evaluation pixels, and
``auto`` keeps each data set's own choice."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from typer.testing import CliRunner

from pwmpr.cli.app import app
from pwmpr.config import RunConfig
from pwmpr.data import DataBundle, TensorLoader, TensorSplit, crop_pad, load_data, set_augment
from pwmpr.errors import PwmprError


def _crops(img: torch.Tensor, pad: int) -> list[torch.Tensor]:
    """Every crop of ``img`` (c, h, w) at its own size from its zero padding of ``pad`` pixels."""
    _, h, w = img.shape
    padded = torch.nn.functional.pad(img, (pad, pad, pad, pad))
    return [padded[:, i:i + h, j:j + w] for i in range(2 * pad + 1) for j in range(2 * pad + 1)]


def _batch(augment: str, side: int = 16, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.arange(2 * side * side, dtype=torch.float32).view(1, 2, side, side).repeat(n, 1, 1, 1) + 1
    loader = TensorLoader(TensorSplit(x, torch.zeros(n, dtype=torch.long)), n, torch.device("cpu"), shuffle=True,
                          augment=augment, generator=torch.Generator().manual_seed(0))
    (batch, _), = list(loader)
    return x[0], batch


def test_the_crop_padding_is_an_eighth_of_the_short_side():
    assert crop_pad(32, 32) == 4 and crop_pad(28, 28) == 3 and crop_pad(64, 48) == 6
    assert crop_pad(8, 8) == 1 and crop_pad(5, 40) == 1  # at least one pixel


def test_crop_shifts_and_never_mirrors_and_crop_flip_does_both():
    img, batch = _batch("crop")
    pad = crop_pad(16, 16)
    shifted = _crops(img, pad)
    assert all(any(torch.equal(b, c) for c in shifted) for b in batch)
    assert len({tuple(b.flatten().tolist()) for b in batch}) > 10  # the offsets vary (within 2 pixels at 16 px)
    img, batch = _batch("crop-flip")
    mirrored = [c.flip(2) for c in shifted]
    flipped = [any(torch.equal(b, m) for m in mirrored) for b in batch]
    assert all(f or any(torch.equal(b, c) for c in shifted) for b, f in zip(batch, flipped, strict=True))
    assert 10 < sum(flipped) < 54  # about half of the 64 are mirrored
    _, batch = _batch("none")
    assert torch.equal(batch, img.expand_as(batch))


def test_crop_flip_on_cifar_sized_images_draws_what_earlier_versions_drew():
    # 32 px: the padding is CIFAR's 4 pixels, and offsets and flips come from the generator in the same order
    n = 16
    x = torch.randn(n, 3, 32, 32)
    loader = TensorLoader(TensorSplit(x, torch.arange(n)), n, torch.device("cpu"), shuffle=True, augment="crop-flip",
                          generator=torch.Generator().manual_seed(3))
    (batch, y), = list(loader)
    gen = torch.Generator().manual_seed(3)
    order = torch.randperm(n, generator=gen)
    offsets = torch.randint(0, 9, (n, 2), generator=gen)
    flips = torch.rand(n, generator=gen) < 0.5
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for k in range(n):
        i, j = offsets[k].tolist()
        want = padded[order[k], :, i:i + 32, j:j + 32]
        assert torch.equal(batch[k], want.flip(2) if flips[k] else want)
    assert torch.equal(y, order)


def test_load_data_sets_a_tensor_data_sets_augmentation_and_refuses_crops_of_non_images(tmp_path):
    assert load_data("digits").augment == "none"  # auto: digits' own choice
    bundle = load_data("digits", augment="crop")
    assert bundle.augment == "crop"
    loader = bundle.loader("train", 32, torch.device("cpu"), train=True, generator=torch.Generator().manual_seed(0))
    x, _ = next(iter(loader))
    assert x.shape[1:] == (1, 8, 8)
    np.savez(tmp_path / "flat.npz", x=np.random.rand(200, 6).astype(np.float32), y=np.arange(200) % 2)
    with pytest.raises(PwmprError, match=r"--augment crop-flip crops images .* holds samples of shape \(6,\)"):
        load_data(f"npz:{tmp_path / 'flat.npz'}", augment="crop-flip")
    assert load_data(f"npz:{tmp_path / 'flat.npz'}", augment="none").augment == "none"
    with pytest.raises(PwmprError, match="--augment must be one of auto, crop-flip, crop, none, got 'mirror'"):
        load_data("digits", augment="mirror")


def test_a_streamed_bundle_keeps_its_own_loader_s_augmentation():
    streamed = DataBundle("mine", 2, (3, 8, 8), "cnn", [0] * 10, [0] * 2, [0] * 2, make_loader=lambda *a, **k: [])
    set_augment(streamed, "auto")  # nothing asked: nothing to refuse
    for mode in ("crop", "none"):  # its transforms decide, whatever the mode
        with pytest.raises(PwmprError, match="streamed by its own loader"):
            set_augment(streamed, mode)


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    """Digits 0-2 (real, 8x8) as PNG class folders, with a test split."""
    root = tmp_path_factory.mktemp("digits")
    d = load_digits(n_class=3)
    for i, (img, label) in enumerate(zip(d.images[:300], d.target[:300], strict=True)):
        folder = root / ("test" if i % 5 == 0 else "train") / f"digit{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((img * 255 / 16).astype(np.uint8)).save(folder / f"{i}.png")
    return root


def _training_views(bundle, index: int, draws: int = 40) -> list[torch.Tensor]:
    return [bundle.train[index][0] for _ in range(draws)]


def test_an_image_folder_crops_without_mirrors_under_crop_and_trains_on_the_evaluation_pixels_under_none(
        digits_folder):
    torch.manual_seed(0)
    plain = load_data(f"folder:{digits_folder}", augment="none")
    whole = plain.val.dataset[plain.train.indices[0]][0]  # the evaluation transform of training image 0
    assert all(torch.equal(v, whole) for v in _training_views(plain, 0))
    cropped = load_data(f"folder:{digits_folder}", augment="crop")
    views = _training_views(cropped, 0)
    # ToTensor/Normalize after a zero-padded crop: the padding is black, normalised, where the shift shows
    black = (0 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])

    def shifts(pad: int) -> list[torch.Tensor]:
        padded = black[:, None, None].expand(3, 8 + 2 * pad, 8 + 2 * pad).clone()
        padded[:, pad:pad + 8, pad:pad + 8] = whole
        return [padded[:, i:i + 8, j:j + 8] for i in range(2 * pad + 1) for j in range(2 * pad + 1)]

    shifted = shifts(crop_pad(8, 8))
    assert all(any(torch.allclose(v, s, atol=1e-6) for s in shifted) for v in views)
    assert len({tuple(v.flatten().tolist()) for v in views}) > 1
    mirrored_only = [m for m in (s.flip(2) for s in shifted) if not any(torch.allclose(m, s) for s in shifted)]
    flipping = load_data(f"folder:{digits_folder}")  # auto: crop and flip
    views = _training_views(flipping, 0, 80)
    assert any(any(torch.allclose(v, m, atol=1e-6) for m in mirrored_only) for v in views)


def test_the_flag_reaches_the_run_folder_and_a_bad_value_is_one_line(tmp_path):
    cli = CliRunner()
    args = ["grow", "--data", "digits", "--model", "cnn", "--phase-epochs", "1", "--final-epochs", "1",
            "--max-phases", "1", "--batch-size", "64", "-q", "--no-tau-core"]
    result = cli.invoke(app, [*args, "--augment", "crop", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["augment"] == "crop"
    result = cli.invoke(app, [*args, "--augment", "mirror", "--out", str(tmp_path / "bad")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: --augment must be one of auto, crop-flip, crop, none, got 'mirror'"]
    assert not (tmp_path / "bad").exists()


def test_a_sweep_over_an_image_folder_trains_every_point_under_the_mode(digits_folder, tmp_path):
    out = tmp_path / "sweep"
    result = CliRunner().invoke(app, ["sweep", "--data", f"folder:{digits_folder}", "--model", "cnn",
                                      "--augment", "crop", "--densities", "0.5", "--seeds", "0", "--epochs", "1",
                                      "--val-fraction", "0.5", "--batch-size", "64", "--device", "cpu", "-q",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    configs = [json.loads(p.read_text()) for p in out.rglob("config.json")]
    assert configs and {c["augment"] for c in configs} == {"crop"}


def test_an_unknown_mode_is_refused_by_the_transform_builder_too():
    from pwmpr.data.folder import training_transform

    with pytest.raises(PwmprError, match="--augment must be one of auto, crop-flip, crop, none, got 'mirror'"):
        training_transform([], [], None, "mirror")


def test_a_config_written_before_the_option_reads_as_auto():
    data = RunConfig().to_dict()
    data.pop("augment")
    data["version"] = 8
    assert RunConfig.from_dict(data).augment == "auto"
