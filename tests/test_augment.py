"""Images on the training device: uint8 storage with the training split's normalisation, the
crop-and-flip augmentation (a pure function of (seed, epoch, sample)), exact resume with it, and
the live teacher it needs."""

import numpy as np
import pytest
import torch
from test_engine import StopAt  # a job killed after an epoch's checkpoint

from kdflow import data
from kdflow.data.augment import Augment
from kdflow.distillation import DistillSetup, feature_shapes
from kdflow.engine import TrainConfig, fit, scratch_objective
from kdflow.losses import kd_loss
from kdflow.methods import METHODS
from kdflow.models import build_model


@pytest.fixture(scope="module")
def digits_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("digits") / "digits.npz"
    data.save_raw(data.LOADERS["digits"](None, 0), path)
    return path


def test_images_stay_uint8_and_are_normalised_by_the_training_split_alone(digits_file, tmp_path):
    train, val, test = (data.load_split(digits_file, s, 0.2, 0) for s in ("train", "val", "test"))
    assert train.x.dtype == val.x.dtype == test.x.dtype == torch.uint8
    raw = data.load_raw(digits_file)
    train_idx, _ = data.stratified_split(raw.y_train, 0.2, 0)
    pixels = raw.x_train[train_idx].astype(np.float64) / 255.0  # the training split only
    assert train.mean.flatten().tolist() == pytest.approx([pixels.mean()], rel=1e-6)
    assert train.std.flatten().tolist() == pytest.approx([pixels.std()], rel=1e-6)
    for split in (val, test):  # every split is read with the training split's statistics
        assert torch.equal(split.mean, train.mean) and torch.equal(split.std, train.std)
    x = test.inputs(slice(0, 5))
    want = (torch.from_numpy(raw.x_test[:5]).double() / 255 - pixels.mean()) / pixels.std()
    assert x.dtype == torch.float32 and torch.allclose(x.double(), want, atol=1e-5)
    # other test images change nothing: the statistics never read the test part
    changed = data.RawData(raw.x_train, raw.y_train, 255 - raw.x_test, raw.y_test)
    data.save_raw(changed, tmp_path / "changed.npz")
    assert torch.equal(data.load_split(tmp_path / "changed.npz", "test", 0.2, 0).mean, train.mean)
    normed = train.inputs()
    assert abs(normed.mean().item()) < 1e-4 and normed.std().item() == pytest.approx(1.0, abs=1e-3)


def reference_crop_flip(img: np.ndarray, pad: int, top: int, left: int, flip: bool) -> np.ndarray:
    """One image as torchvision's RandomCrop(size, padding=pad) then RandomHorizontalFlip would
    give it for these draws: zero-pad, cut the window at (top, left), mirror left-right."""
    c, h, w = img.shape
    padded = np.pad(img, ((0, 0), (pad, pad), (pad, pad)))
    out = padded[:, top : top + h, left : left + w]
    return out[:, :, ::-1] if flip else out


@pytest.mark.parametrize("crop, flip", [(4, True), (2, False), (0, True)])
def test_augmentation_is_the_padded_crop_and_flip_it_claims(crop, flip):
    aug = Augment(crop, flip)
    x = torch.randint(0, 256, (16, 3, 10, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    offsets, flips = aug.draws(16, seed=3, epoch=2)
    out = aug.apply(x, offsets, flips)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    for i in range(16):
        top, left = offsets[i].tolist()
        want = reference_crop_flip(x[i].numpy(), crop, top, left, bool(flips[i]))
        np.testing.assert_array_equal(out[i].numpy(), want)
    assert offsets.min() >= 0 and offsets.max() <= 2 * crop
    if crop:
        assert len(set(map(tuple, offsets.tolist()))) > 1  # the draws vary between samples
    assert flips.any() == flip and (not flip or not flips.all())
    centred = aug.apply(x, torch.full((16, 2), crop), torch.zeros(16, dtype=torch.bool))
    assert torch.equal(centred, x)  # the centred window without flip is the image itself


def test_augmentation_draws_are_a_pure_function_of_seed_and_epoch():
    aug = Augment(4, True)
    torch.manual_seed(123)  # the global RNG plays no part
    a = aug.draws(100, seed=0, epoch=5)
    torch.manual_seed(7)
    b = aug.draws(100, seed=0, epoch=5)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    for other in (aug.draws(100, seed=0, epoch=6), aug.draws(100, seed=1, epoch=5)):
        assert not torch.equal(a[0], other[0])
    # a sample's draw does not depend on the batch it falls in: apply looks it up by index
    x = torch.randint(0, 256, (100, 1, 8, 8), dtype=torch.uint8)
    idx = torch.tensor([7, 3, 99])
    whole = aug.apply(x, *a)
    assert torch.equal(aug.apply(x[idx], a[0][idx], a[1][idx]), whole[idx])


SPEC = {"family": "cnn2d", "channels": 4, "layers": 2}
AUG_CFG = TrainConfig(epochs=4, batch_size=64, seed=0, augment_crop=1, augment_flip=True)


def new_model():
    torch.manual_seed(0)
    return build_model(SPEC, (1, 8, 8), 10)


def test_augmented_fit_resumes_bit_identical_and_differs_from_unaugmented(digits_file, tmp_path):
    train, val = data.load_split(digits_file, "train", 0.2, 0), data.load_split(digits_file, "val", 0.2, 0)
    straight = fit(new_model(), train, val, AUG_CFG, scratch_objective())
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(new_model(), train, val, AUG_CFG, scratch_objective(), checkpoint=ckpt, callbacks=[StopAt(2)])
    resumed = fit(new_model(), train, val, AUG_CFG, scratch_objective(), checkpoint=ckpt)
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert resumed.history == straight.history
    plain = fit(new_model(), train, val, TrainConfig(epochs=4, batch_size=64, seed=0), scratch_objective())
    assert plain.history[-1]["train_loss"] != straight.history[-1]["train_loss"]
    # validation is never augmented: the same weights give the same val accuracy as evaluate's
    assert straight.best_val_acc > 0.3


def test_augmentation_of_a_signal_is_refused(small_splits):
    train, val = small_splits
    with pytest.raises(ValueError, match="augmentation crops and flips images"):
        fit(
            build_model({"family": "mlp", "hidden": [4]}, (40,), 10), train, val, AUG_CFG, scratch_objective()
        )


def test_a_live_teacher_gives_its_outputs_on_the_augmented_batch(digits_file):
    train = data.load_split(digits_file, "train", 0.2, 0)
    torch.manual_seed(1)
    teacher = build_model({"family": "resnet", "depth": 8, "width": 8}, (1, 8, 8), 10)
    teacher.train()  # a live teacher runs in eval mode whatever mode it arrives in
    fitnets = METHODS["fitnets"]
    hp = fitnets.resolve({})
    setup = DistillSetup.build(fitnets, hp, SPEC, (1, 8, 8), 10, teacher, train, None, live=True)
    assert setup.teacher.live and setup.teacher.logits is None
    t_layer = setup.teacher.layers[0]
    assert setup.t_shapes == {t_layer: feature_shapes(teacher, (1, 8, 8))[t_layer]}
    x = train.inputs(slice(0, 32))
    logits, feats = setup.teacher.batch(torch.arange(32), x)
    teacher.eval()
    with torch.no_grad():
        want_logits, want_feats = teacher.forward_features(x)
    assert torch.equal(logits, want_logits) and torch.equal(feats[t_layer], want_feats[t_layer])
    assert not any(p.requires_grad for p in teacher.parameters())
    kd = METHODS["kd"]
    kd_setup = DistillSetup.build(kd, kd.resolve({}), SPEC, (1, 8, 8), 10, teacher, train, None, live=True)
    d = kd_setup.distiller(kd.resolve({}), 0, len(train))
    parts = kd_setup.objective(kd.resolve({}))(d, x, train.y[:32], torch.arange(32), 1)
    hp = kd.resolve({})
    want = kd_loss(d.student(x), want_logits, train.y[:32], hp["temperature"], hp["alpha"])["loss"]
    assert torch.allclose(parts["loss"], want)
