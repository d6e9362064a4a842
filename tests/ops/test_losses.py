import pytest
import torch
from torchvision.ops import sigmoid_focal_loss as tv_focal

from scaledet.ops.losses import box_regression_loss, sigmoid_focal_loss


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.25, 1.5), (0.75, 2.0), (-1.0, 0.0)])
def test_focal_loss_equals_torchvision(alpha, gamma):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(64, 91, generator=g) * 4
    targets = (torch.rand(64, 91, generator=g) < 0.05).float()
    ours = sigmoid_focal_loss(logits, targets, alpha, gamma)
    ref = tv_focal(logits, targets, alpha=alpha, gamma=gamma, reduction="none")
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_focal_loss_is_fp32_and_finite_under_bf16_autocast():
    logits = torch.tensor([[60.0, -60.0, 0.0]], dtype=torch.bfloat16)
    targets = torch.tensor([[0.0, 1.0, 1.0]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = sigmoid_focal_loss(logits, targets, 0.25, 1.5)
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss).all()
    assert loss[0, 0] > 10 and loss[0, 1] > 10  # confident and wrong costs a lot


def test_box_losses_match_definitions():
    pred = torch.tensor([0.05, 0.5, -2.0])
    target = torch.zeros(3)
    # huber with delta 0.1: 0.5 x^2 inside, delta (|x| - delta / 2) outside
    expected_huber = 0.5 * 0.05 ** 2 + 0.1 * (0.5 - 0.05) + 0.1 * (2.0 - 0.05)
    assert box_regression_loss(pred, target, "huber", 0.1).item() == pytest.approx(expected_huber, rel=1e-6)
    assert box_regression_loss(pred, target, "l1", 0.0).item() == pytest.approx(2.55, rel=1e-6)
    expected_sl1 = 0.5 * 0.05 ** 2 / 0.11 + (0.5 - 0.055) + (2.0 - 0.055)
    assert box_regression_loss(pred, target, "smooth_l1", 0.11).item() == pytest.approx(expected_sl1, rel=1e-6)
    with pytest.raises(ValueError, match="unknown box loss"):
        box_regression_loss(pred, target, "l3", 0.1)


@pytest.mark.parametrize("alpha,gamma", [(0.25, 1.5), (0.75, 2.0), (-1.0, 0.0)])
def test_sparse_positive_focal_equals_dense(alpha, gamma):
    from scaledet.ops.losses import focal_loss_per_image

    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 50, 7, generator=g) * 3
    valid = torch.rand(3, 50, generator=g) > 0.1
    pos_image = torch.tensor([0, 0, 2, 2, 2])
    pos_anchor = torch.tensor([3, 9, 0, 0, 41])
    pos_class = torch.tensor([1, 6, 2, 5, 0])
    valid[pos_image, pos_anchor] = True  # positives are never ignored
    target = torch.zeros_like(logits)
    target[pos_image, pos_anchor, pos_class] = 1.0
    dense = (tv_focal(logits, target, alpha=alpha, gamma=gamma, reduction="none") * valid[..., None]).sum(dim=(1, 2))
    sparse = focal_loss_per_image(logits, valid, pos_image, pos_anchor, pos_class, alpha, gamma)
    torch.testing.assert_close(sparse, dense, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.25, 1.5), (-1.0, 0.0)])
def test_sparse_focal_gradient_is_the_dense_losss_gradient(alpha, gamma):
    """The hand-written backward equals autograd through the dense torchvision focal loss, and
    passes torch's numerical gradient check in float64."""
    from scaledet.ops.losses import focal_loss_per_image

    g = torch.Generator().manual_seed(3)
    logits = (torch.randn(2, 6, 5, generator=g, dtype=torch.float64) * 6).requires_grad_()
    valid = torch.rand(2, 6, generator=g) > 0.2
    pos_image, pos_anchor, pos_class = torch.tensor([0, 1, 1]), torch.tensor([2, 0, 0]), torch.tensor([4, 1, 3])
    valid[pos_image, pos_anchor] = True
    image_weights = torch.tensor([0.7, 1.3], dtype=torch.float64)

    def sparse(x):
        return focal_loss_per_image(x, valid, pos_image, pos_anchor, pos_class, alpha, gamma)

    assert torch.autograd.gradcheck(sparse, (logits,))
    (sparse(logits) * image_weights).sum().backward()
    sparse_grad, logits.grad = logits.grad.clone(), None
    target = torch.zeros_like(logits)
    target[pos_image, pos_anchor, pos_class] = 1.0
    dense = (tv_focal(logits, target, alpha=alpha, gamma=gamma, reduction="none") * valid[..., None]).sum(dim=(1, 2))
    (dense * image_weights).sum().backward()
    torch.testing.assert_close(sparse_grad, logits.grad, rtol=1e-9, atol=1e-12)
