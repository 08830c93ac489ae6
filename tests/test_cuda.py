"""The solver, the metrics and the callback on a CUDA device (skipped without one).

``bash bench/device_check.sh`` runs these with ``pytest -k cuda``; lines starting with
``CUDA-CHECK`` are the numbers it copies into its summary.
"""

from __future__ import annotations

import copy
from dataclasses import fields
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from helpers import LossRecorder, Untouched
from torch.utils.data import DataLoader

from lightning_igos import IGOSCallback, causal_curves, gradient_saliency, igos, integrated_gradients
from lightning_igos.demo.synthetic import make_object_images
from lightning_igos.demo.toy_module import ObjectClassifier

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def cuda_cnn(trained_cnn):
    return copy.deepcopy(trained_cnn).cuda()


@pytest.fixture(scope="module")
def cuda_probe(probe_data):
    return probe_data.images.cuda(), probe_data.labels.cuda()


def _tensors(result) -> dict[str, torch.Tensor]:
    values = {f.name: getattr(result, f.name) for f in fields(result)}
    return {name: value for name, value in values.items() if isinstance(value, torch.Tensor)}


def test_cuda_outputs_stay_on_the_images_device(cuda_cnn, cuda_probe) -> None:
    images, labels = cuda_probe[0][:4], cuda_probe[1][:4]
    for method in ("igos", "igos++"):
        ex = igos(cuda_cnn, images, labels, method=method, iterations=2, ig_steps=4)
        for name, tensor in _tensors(ex).items():
            assert tensor.device == images.device, (method, name)
        cc = causal_curves(cuda_cnn, images, ex.saliency, labels, steps=10)
        for name, tensor in _tensors(cc).items():
            assert tensor.device == images.device, (method, name)
        assert torch.isfinite(cc.insertion_auc).all() and torch.isfinite(cc.deletion_auc).all()
    assert gradient_saliency(cuda_cnn, images, labels).device == images.device
    assert integrated_gradients(cuda_cnn, images, labels, steps=4).device == images.device
    # A saliency computed elsewhere (here on the CPU) is scored on the images' device.
    cc = causal_curves(cuda_cnn, images, torch.rand(4, 1, 8, 8), labels, steps=10)
    assert cc.insertion_auc.device == images.device


def test_cuda_bf16_autocast_is_finite_and_close_to_float32(cuda_cnn, cuda_probe) -> None:
    images, labels = cuda_probe[0][:8], cuda_probe[1][:8]
    full = igos(cuda_cnn, images, labels)
    half = igos(cuda_cnn, images, labels, autocast_dtype=torch.bfloat16)
    assert half.mask.dtype == torch.float32 and half.saliency.dtype == torch.float32
    assert torch.isfinite(half.mask).all() and torch.isfinite(half.saliency).all()
    # The metric in float32 on both explanations: the difference is the explanation's.
    cc_full = causal_curves(cuda_cnn, images, full.saliency, labels)
    cc_half = causal_curves(cuda_cnn, images, half.saliency, labels)
    # And the metric itself under bf16 autocast.
    with torch.autocast("cuda", dtype=torch.bfloat16):
        cc_autocast = causal_curves(cuda_cnn, images, half.saliency, labels)
    for cc in (cc_full, cc_half, cc_autocast):
        assert torch.isfinite(cc.insertion_auc).all() and torch.isfinite(cc.deletion_auc).all()
    rows = {"float32": cc_full, "bf16 solver": cc_half, "bf16 solver + bf16 metric": cc_autocast}
    for name, cc in rows.items():
        print(f"CUDA-CHECK bf16: {name}: insertion AUC {cc.insertion_auc.mean():.4f}, "
              f"deletion AUC {cc.deletion_auc.mean():.4f}")
    print(f"CUDA-CHECK bf16: max |mask bf16 - mask float32| {(half.mask - full.mask).abs().max():.4f}; "
          f"passes per image float32 {full.passes_per_image:.1f}, bf16 {half.passes_per_image:.1f}")
    for cc in (cc_half, cc_autocast):
        assert abs(float(cc.insertion_auc.mean() - cc_full.insertion_auc.mean())) < 0.05
        assert abs(float(cc.deletion_auc.mean() - cc_full.deletion_auc.mean())) < 0.05


def test_cuda_batching_does_not_change_an_image(cuda_cnn, cuda_probe) -> None:
    """max_batch_size 64 against 8: the same numbers up to the GPU kernels' rounding (reported, loosely bounded)."""
    images, labels = cuda_probe[0][:6], cuda_probe[1][:6]
    wide = igos(cuda_cnn, images, labels, max_batch_size=64)
    narrow = igos(cuda_cnn, images, labels, max_batch_size=8)
    assert (wide.mask < 0.5).any(), "the masks must move for the comparison to mean something"
    mask_diff = float((wide.mask - narrow.mask).abs().max())
    saliency_diff = float((wide.saliency - narrow.saliency).abs().max())
    cc_wide = causal_curves(cuda_cnn, images, wide.saliency, labels, max_batch_size=64)
    cc_narrow = causal_curves(cuda_cnn, images, narrow.saliency, labels, max_batch_size=8)
    auc_diff = max(float((cc_wide.insertion_auc - cc_narrow.insertion_auc).abs().max()),
                   float((cc_wide.deletion_auc - cc_narrow.deletion_auc).abs().max()))
    print(f"CUDA-CHECK batching (max_batch_size 64 vs 8): max |mask diff| {mask_diff:.3g}, max |saliency diff| "
          f"{saliency_diff:.3g}, max |AUC diff| {auc_diff:.3g}; bitwise equal masks: "
          f"{torch.equal(wide.mask, narrow.mask)}")
    assert auc_diff < 0.01


# ----------------------------------------------------------------------------- the callback on a GPU


def _train(tmp_path: Path, callbacks: list) -> tuple[ObjectClassifier, list[torch.Tensor]]:
    train = make_object_images(96, image_size=32, seed=0)
    val = make_object_images(24, image_size=32, seed=1)
    loaders = (DataLoader(train.dataset(), batch_size=32, shuffle=True), DataLoader(val.dataset(), batch_size=8))
    pl.seed_everything(0)
    recorder = LossRecorder()
    torch.manual_seed(0)
    module = ObjectClassifier(num_classes=4, width=4)
    pl.Trainer(
        accelerator="gpu", devices=1, max_epochs=2, callbacks=[*callbacks, recorder], logger=False,
        default_root_dir=tmp_path, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, log_every_n_steps=1,
    ).fit(module, *loaders)
    return module.cpu(), recorder.losses


def _same(a: tuple, b: tuple) -> bool:
    (module_a, losses_a), (module_b, losses_b) = a, b
    weights = all(torch.equal(x, y) for x, y in zip(module_a.state_dict().values(), module_b.state_dict().values()))
    return weights and len(losses_a) == len(losses_b) and all(torch.equal(x, y) for x, y in zip(losses_a, losses_b))


def test_cuda_training_is_bitwise_identical_with_and_without_the_callback(tmp_path: Path) -> None:
    deterministic, benchmark = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        shared: dict = {}
        callbacks = [Untouched(shared, "before"), IGOSCallback(num_probe=4, iterations=2, ig_steps=3,
                                                               metric_steps=8, mask_size=4, log_images=False),
                     Untouched(shared, "after")]
        with_callback = _train(tmp_path / "a", callbacks)
        without = _train(tmp_path / "b", [])
        assert shared["checked"] == 2
        if not _same(with_callback, without):
            control = _train(tmp_path / "c", [])
            assert _same(without, control), "two runs without the callback differ: this GPU's kernels are not " \
                                            "deterministic, so the callback's invariance cannot be checked here"
            pytest.fail("training with the callback differs from training without it on CUDA")
        print(f"CUDA-CHECK callback: {len(without[1])} training losses and all weights bitwise identical "
              "with and without IGOSCallback on CUDA")
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = deterministic, benchmark
