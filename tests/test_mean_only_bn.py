"""Mean-only batch norm (eq. 7–8) and folding it with weight norm for inference."""

import pytest
import torch
from torch import nn

import wnlib
from wnlib import nn as wnn


@pytest.mark.parametrize("shape", [(16, 4), (8, 4, 5), (4, 4, 3, 3)])
def test_training_subtracts_batch_mean_and_adds_bias(shape):
    torch.manual_seed(0)
    bn = wnn.MeanOnlyBatchNorm(4)
    with torch.no_grad():
        bn.bias.copy_(torch.arange(4.0))
    x = torch.randn(shape) * 3 + 2
    y = bn(x)
    reduce = [0, *range(2, x.ndim)]
    torch.testing.assert_close(y.mean(reduce), torch.arange(4.0), rtol=0, atol=1e-5)
    torch.testing.assert_close(y.std(reduce), x.std(reduce))  # the scale is untouched
    torch.testing.assert_close(bn.running_mean, 0.1 * x.mean(reduce))
    assert bn.num_batches_tracked.item() == 1


def test_backward_centres_the_gradient_eq8():
    torch.manual_seed(1)
    bn = wnn.MeanOnlyBatchNorm(3)
    x = torch.randn(10, 3, requires_grad=True)
    upstream = torch.randn(10, 3)
    bn(x).backward(upstream)
    torch.testing.assert_close(x.grad, upstream - upstream.mean(0, keepdim=True))
    torch.testing.assert_close(bn.bias.grad, upstream.sum(0))


def test_eval_uses_running_mean_and_state_dict_follows_batchnorm():
    bn = wnn.MeanOnlyBatchNorm(2, momentum=None)  # cumulative average, as BatchNorm with momentum=None
    for k in range(3):
        bn(torch.full((4, 2), float(k)) + torch.tensor([0.0, 10.0]))
    torch.testing.assert_close(bn.running_mean, torch.tensor([1.0, 11.0]))
    bn.eval()
    torch.testing.assert_close(bn(torch.zeros(1, 2)), -bn.running_mean.unsqueeze(0))
    assert set(bn.state_dict()) == {"bias", "running_mean", "num_batches_tracked"}
    reference = nn.BatchNorm1d(2)
    assert set(bn.state_dict()) < set(reference.state_dict())


def test_bad_inputs():
    bn = wnn.MeanOnlyBatchNorm(4)
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 4\) or \(N, 4, \*\), got \(2, 3\)"):
        bn(torch.randn(2, 3))
    with pytest.raises(ValueError, match="more than 1 value per feature in training"):
        bn(torch.randn(1, 4))
    with pytest.raises(ValueError, match="momentum must be in"):
        wnn.MeanOnlyBatchNorm(4, momentum=2.0)


def test_fold_for_inference_gives_same_outputs_with_plain_layers():
    torch.manual_seed(2)
    model = nn.Sequential(
        wnn.Conv2d(3, 6, 3), wnn.MeanOnlyBatchNorm(6), nn.ReLU(), nn.Flatten(),
        wnn.Linear(6 * 4 * 4, 5, bias=False), wnn.MeanOnlyBatchNorm(5), wnn.Linear(5, 2),
    )  # fmt: skip
    x = torch.randn(32, 3, 6, 6)
    for _ in range(5):  # populate the running means
        model(x + torch.randn_like(x))
    model.eval()
    expected = model(x)
    wnlib.fold_for_inference(model)
    assert [type(m) for m in model] == [
        nn.Conv2d, nn.Identity, nn.ReLU, nn.Flatten, nn.Linear, nn.Identity, nn.Linear
    ]  # fmt: skip
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="Linear has 2 outputs but the batch norm has 3"):
        wnlib.fold_mean_only_bn(nn.Linear(2, 2), wnn.MeanOnlyBatchNorm(3))


def test_fold_mean_only_bn_checks_everything_before_changing_the_layer():
    layer = wnn.Linear(2, 2)
    before = {k: t.clone() for k, t in layer.state_dict().items()}
    with pytest.raises(ValueError, match="Linear has 2 outputs but the batch norm has 3"):
        wnlib.fold_mean_only_bn(layer, wnn.MeanOnlyBatchNorm(3).eval())
    with pytest.raises(RuntimeError, match=r"training mode, .* model.eval\(\) \(or bn.eval\(\)\) first"):
        wnlib.fold_mean_only_bn(layer, wnn.MeanOnlyBatchNorm(2))
    with pytest.raises(TypeError, match="folds a MeanOnlyBatchNorm, got BatchNorm1d"):
        wnlib.fold_mean_only_bn(layer, nn.BatchNorm1d(2))
    assert type(layer) is wnn.Linear and wnlib.is_weight_normed(layer, "weight")
    assert all(torch.equal(t, before[k]) for k, t in layer.state_dict().items())


def test_fold_mean_only_bn_with_a_weight_normed_bias_keeps_the_shift():
    torch.manual_seed(3)
    layer = wnlib.weight_norm(wnn.Linear(3, 2), name="bias", dim=None)
    bn = wnn.MeanOnlyBatchNorm(2)
    x = torch.randn(16, 3)
    bn(layer(x) + 1.0)
    bn.eval()
    expected = bn(layer(x))
    wnlib.fold_mean_only_bn(layer, bn)
    assert type(layer) is nn.Linear
    torch.testing.assert_close(layer(x), expected)


def test_fold_for_inference_refuses_a_model_in_training_mode_and_changes_nothing():
    torch.manual_seed(4)
    model = nn.Sequential(wnn.Linear(3, 4), wnn.MeanOnlyBatchNorm(4), nn.ReLU(), wnn.Linear(4, 2))
    x = torch.randn(32, 3)
    model(x + 2.0)  # a running mean far from this batch's mean
    kinds = [type(m) for m in model]
    with pytest.raises(RuntimeError, match=r"needs the model in eval mode, .* call model.eval\(\) first"):
        wnlib.fold_for_inference(model)
    assert [type(m) for m in model] == kinds
    expected = model.eval()(x)
    torch.testing.assert_close(wnlib.fold_for_inference(model)(x), expected, rtol=1e-5, atol=1e-6)


def test_fold_for_inference_validates_every_pair_before_folding_any():
    model = nn.Sequential(
        wnn.Linear(3, 4), wnn.MeanOnlyBatchNorm(4), nn.Sequential(wnn.Linear(4, 2), wnn.MeanOnlyBatchNorm(3))
    ).eval()
    with pytest.raises(ValueError, match=r"Linear \(2\.0\) has 2 outputs but the batch norm has 3"):
        wnlib.fold_for_inference(model)
    assert type(model[0]) is wnn.Linear and type(model[1]) is wnn.MeanOnlyBatchNorm


@pytest.mark.parametrize("middle", [nn.PReLU, lambda: nn.LayerNorm(4), lambda: nn.BatchNorm1d(4)])
def test_fold_for_inference_leaves_a_batch_norm_after_a_non_affine_module(middle):
    torch.manual_seed(0)
    model = nn.Sequential(wnlib.nn.Linear(3, 4), middle(), wnn.MeanOnlyBatchNorm(4))
    model(torch.randn(16, 3))  # running statistics
    model.eval()
    x = torch.randn(5, 3)
    y = model(x)
    folded = wnlib.fold_for_inference(model)
    assert isinstance(folded[2], wnn.MeanOnlyBatchNorm)  # not folded into the PReLU/LayerNorm/BatchNorm
    assert not wnlib.is_weight_normed(folded[0])
    torch.testing.assert_close(folded(x), y)
