"""The kept axis travels with a wnlib state_dict; shared submodules export to torch's formats."""

import io
import warnings

import pytest
import torch
from torch import nn

import wnlib
from wnlib import nn as wnn


def saved_and_loaded(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


DIM_1_INTO_DIM_0 = r"saved with weight norm over dim=1, but .* over dim=0: build this layer with dim=1"


def test_state_saved_with_dim_1_refuses_a_dim_0_layer():
    torch.manual_seed(0)
    saved = wnn.Linear(8, 8, dim=1)  # g has 8 entries either way: shapes alone cannot tell
    with torch.no_grad():
        saved.weight_g.mul_(torch.linspace(0.5, 2.0, 8))
    for state in (saved.state_dict(), saved_and_loaded(saved.state_dict())):
        layer = wnn.Linear(8, 8)
        before = {k: t.clone() for k, t in layer.state_dict().items()}
        with pytest.raises(ValueError, match=DIM_1_INTO_DIM_0):
            layer.load_state_dict(state)
        assert all(torch.equal(t, before[k]) for k, t in layer.state_dict().items())
        right = wnn.Linear(8, 8, dim=1)
        right.load_state_dict(state)
        x = torch.randn(3, 8)
        torch.testing.assert_close(right(x), saved(x))


def test_dim_none_and_nested_models_are_checked_too():
    def make(dim):
        torch.manual_seed(1)
        inner = nn.Sequential(wnn.Conv1d(2, 3, 3, dim=dim))
        return nn.Sequential(inner, wnlib.weight_norm(nn.Embedding(5, 3)))

    with pytest.raises(ValueError, match=r"0\.0\.weight_v/weight_g were saved .* with dim=None"):
        make(0).load_state_dict(make(None).state_dict())
    make(None).load_state_dict(make(None).state_dict())


def test_states_without_the_entry_still_load():
    torch.manual_seed(2)
    saved = wnn.Linear(4, 3)
    x = torch.randn(2, 4)
    old_style = dict(saved.state_dict())  # a plain dict: no _metadata, as older checkpoints or rebuilt dicts
    assert not hasattr(old_style, "_metadata")
    layer = wnn.Linear(4, 3)
    layer.load_state_dict(old_style)
    torch.testing.assert_close(layer(x), saved(x))
    plain = nn.Linear(4, 3)  # a plain layer's state (v = w, g = ‖w‖)
    layer.load_state_dict(plain.state_dict())
    torch.testing.assert_close(layer(x), plain(x))


def test_entry_is_recorded_and_stripped_for_torch():
    layer = wnn.ConvTranspose1d(2, 3, 3)
    assert layer.state_dict()._metadata[""]["wnlib_weight_norm_dim"] == {"weight": 1}
    for fmt in ("parametrizations", "legacy"):
        exported = wnlib.to_torch_state_dict(layer, fmt)
        assert all("wnlib_weight_norm_dim" not in m for m in exported._metadata.values())
        assert all(isinstance(t, torch.Tensor) for t in exported.values())


def torch_legacy(module, dim=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return nn.utils.weight_norm(module, dim=dim)


@pytest.mark.parametrize("fmt", ["parametrizations", "legacy"])
def test_shared_submodule_exports_under_every_name(fmt):
    def make(wrap):
        torch.manual_seed(3)
        shared = wrap(nn.Linear(4, 4))
        return nn.Sequential(shared, nn.Tanh(), shared, wrap(nn.Linear(4, 2)))

    model = make(wnlib.weight_norm)
    with torch.no_grad():
        model[0].weight_g.mul_(1.5)
    exported = wnlib.to_torch_state_dict(model, fmt)
    assert not [k for k in exported if k.endswith(("weight_v", "weight_g")) and fmt == "parametrizations"]
    wrap = nn.utils.parametrizations.weight_norm if fmt == "parametrizations" else torch_legacy
    reference = make(wrap)
    reference.load_state_dict(exported)
    x = torch.randn(5, 4)
    torch.testing.assert_close(reference(x), model(x))
