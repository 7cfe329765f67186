"""torch.jit.script refuses wnlib's layers with the alternatives; the folded model scripts."""

import pytest
import torch
from torch import nn

import wnlib
from wnlib import nn as wnn

ALTERNATIVES = (
    r"does not support wnlib's weight-normalized Linear\. Use torch\.compile\(model\) or "
    r"torch\.export\.export\(model, args\) instead, or fold .* "
    r"torch\.jit\.script\(wnlib\.fold_for_inference\(model\.eval\(\)\)\)"
)


def test_script_raises_a_clear_error_naming_the_alternatives():
    with pytest.raises(RuntimeError, match=ALTERNATIVES):
        torch.jit.script(wnn.Linear(4, 5))
    nested = nn.Sequential(nn.Sequential(wnlib.weight_norm(nn.Embedding(4, 3))))
    with pytest.raises(RuntimeError, match="weight-normalized WeightNormEmbedding"):
        torch.jit.script(nested)


def test_folded_model_scripts_and_matches():
    torch.manual_seed(0)
    model = nn.Sequential(
        wnn.Conv1d(2, 4, 3), wnn.MeanOnlyBatchNorm(4), nn.ReLU(), nn.Flatten(), wnn.Linear(16, 3)
    )  # fmt: skip
    x = torch.randn(8, 2, 6)
    model(x)  # a running mean
    expected = model.eval()(x)
    scripted = torch.jit.script(wnlib.fold_for_inference(model))
    torch.testing.assert_close(scripted(x), expected, rtol=1e-5, atol=1e-6)
