"""What came after: the measurements behind the chapter on the papers that cite weight normalization.

Each section is one demo of the chapter ``book/after.ipynb``:

- :func:`nonstationary_run`: a batch-normed MLP on a regression target that switches every few steps,
  at several update-to-data ratios, with and without projecting each hidden unit's weights to unit
  norm after every step (the mechanism of Palenicek et al. 2025, "CrossQ + WN");
- :func:`l1_weight_norm`, :func:`path_norm_brute_force`: the 1-path-norm of a network whose layers are
  L1 weight-normalized with one gain per layer equals d_out · Π_l |g_l| (Biswas 2024), checked over
  every path; :func:`sparsity_run` trains plain, L2-WN and L1-WN networks on a bundled data set;
- :func:`wn_mlp`, :func:`top_hessian_eigenvalue`, :func:`hessian_run`: the smallest ‖v_k‖ and the
  top Hessian eigenvalue during full-batch gradient descent on weight-normalized MLPs (the quantities
  in the bound of Cisneros-Velarde et al. 2024);
- :func:`pmod_router_weights`, :func:`xft_routing_weights`, :func:`agr_gradient`: three papers'
  "normalizations" that are not weight normalization, computed from the formulas in the authors' code.

Weight norm here is eq. 2 of Salimans & Kingma (2016), w = g · v/‖v‖, one norm per output unit (a row
of an (out, in) weight). Everything is seeded and small enough for one CPU thread.
"""

from __future__ import annotations

import itertools
import math

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import torch
from torch import Tensor, nn

from wnbook.datasets import raw_digits
from wnbook.style import PALETTE, figure
from wnlib.functional import check_eps

# --------------------------------------------------------------------------------------------------
# Demo 2: batch norm + weight norm under a non-stationary target (Palenicek et al. 2025)
# --------------------------------------------------------------------------------------------------


class BNMLP(nn.Module):
    """Linear → BatchNorm → ReLU, twice, then a linear output (the CrossQ critic's shape, small).

    The hidden linear layers have no bias: the batch norm after them removes any constant shift, and
    without one each layer's function is exactly invariant to scaling its weight rows,
    f(X; c·w) = f(X; w) for c > 0, which is what makes the unit-norm projection harmless.
    """

    def __init__(self, d_in: int, width: int) -> None:
        super().__init__()
        self.hidden = nn.ModuleList([nn.Linear(d_in, width, bias=False), nn.Linear(width, width, bias=False)])
        self.norms = nn.ModuleList([nn.BatchNorm1d(width), nn.BatchNorm1d(width)])
        self.out = nn.Linear(width, 1)

    def features(self, x: Tensor) -> list[Tensor]:
        """The post-ReLU activations of both hidden layers."""
        acts = []
        for lin, bn in zip(self.hidden, self.norms, strict=True):
            x = torch.relu(bn(lin(x)))
            acts.append(x)
        return acts

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.features(x)[-1]).squeeze(-1)


@torch.no_grad()
def project_rows_(weight: Tensor, radius: float = 1.0) -> None:
    """Rescale every row (output unit) of ``weight`` to L2 norm ``radius``, in place."""
    weight.mul_(radius / torch.linalg.vector_norm(weight, dim=1, keepdim=True))


def _rms_row_norm(weight: Tensor) -> float:
    """The root-mean-square L2 norm of the rows of ``weight``."""
    return weight.detach().square().sum(1).mean().sqrt().item()


def _teacher(seed: int, d_in: int) -> tuple[Tensor, Tensor]:
    """A random two-layer tanh teacher, one per phase of the non-stationary target."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(d_in, 32, generator=gen) / math.sqrt(d_in)
    b = torch.randn(32, generator=gen) / math.sqrt(32)
    return a, b


def _target(x: Tensor, teacher: tuple[Tensor, Tensor]) -> Tensor:
    a, b = teacher
    return 2.0 * torch.tanh(2.0 * x @ a) @ b


@torch.no_grad()
def _probe(model: BNMLP, x_probe: Tensor, lr: float) -> tuple[float, float, float]:
    """Σ_l ‖W_l‖_F over hidden layers, the mean effective learning rate η/‖w_i‖² over hidden units,
    and the fraction of hidden units that output 0 on every probe input (dead ReLUs)."""
    model.eval()
    acts = model.features(x_probe)
    model.train()
    norm_sum = sum(torch.linalg.matrix_norm(lin.weight).item() for lin in model.hidden)
    row_sq = torch.cat([lin.weight.square().sum(1) for lin in model.hidden])
    dead = torch.cat([(a == 0).all(0) for a in acts]).float().mean().item()
    return norm_sum, (lr / row_sq).mean().item(), dead


def nonstationary_run(
    utd: int,
    project: bool,
    env_steps: int = 240,
    switch_every: int = 40,
    width: int = 64,
    d_in: int = 8,
    batch: int = 64,
    buffer_steps: int = 10,
    lr: float = 1e-3,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Train a :class:`BNMLP` on a target that switches to a new random teacher every ``switch_every``
    environment steps.

    Each environment step brings one fresh batch into a replay buffer of the last ``buffer_steps``
    batches, then ``utd`` Adam updates on minibatches drawn from the buffer (the update-to-data
    ratio). With ``project=True`` every hidden row is put back on a sphere after each update, as
    Palenicek et al. do (the output layer stays free). The radius is the layer's RMS row norm at
    initialization rather than their 1, so both arms start with the same RMS row norm; for a layer
    followed by batch norm the radius changes nothing but the effective learning rate. Before the updates
    of each step the fresh batch's loss is recorded (loss on data not yet trained on); after them,
    :func:`_probe`'s quantities.
    """
    if utd < 1 or switch_every < 1:
        raise ValueError(f"utd and switch_every must be >= 1, got utd={utd}, switch_every={switch_every}")
    torch.manual_seed(seed)
    model = BNMLP(d_in, width)
    radii = [_rms_row_norm(lin.weight) for lin in model.hidden]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed + 1)
    x_probe = torch.randn(512, d_in, generator=gen)
    xs, ys, rec = [], [], {k: [] for k in ("loss", "norm", "elr", "dead")}
    for step in range(env_steps):
        teacher = _teacher(1000 + step // switch_every, d_in)
        x = torch.randn(batch, d_in, generator=gen)
        xs, ys = [*xs, x][-buffer_steps:], [*ys, _target(x, teacher)][-buffer_steps:]
        with torch.no_grad():
            model.eval()
            rec["loss"].append(nn.functional.mse_loss(model(x), ys[-1]).item())
            model.train()
        bx, by = torch.cat(xs), torch.cat(ys)
        for _ in range(utd):
            idx = torch.randint(len(bx), (batch,), generator=gen)
            opt.zero_grad()
            nn.functional.mse_loss(model(bx[idx]), by[idx]).backward()
            opt.step()
            if project:
                for lin, r in zip(model.hidden, radii, strict=True):
                    project_rows_(lin.weight, r)
        for key, val in zip(("norm", "elr", "dead"), _probe(model, x_probe, lr), strict=True):
            rec[key].append(val)
    return {k: np.asarray(v) for k, v in rec.items()}


def post_switch_loss(loss: np.ndarray, switch_every: int, window: int = 5) -> np.ndarray:
    """Mean loss over the first ``window`` steps of each phase after the first (one value per switch)."""
    starts = range(switch_every, len(loss), switch_every)
    return np.array([loss[s : s + window].mean() for s in starts])


def end_of_phase_loss(loss: np.ndarray, switch_every: int, window: int = 5) -> np.ndarray:
    """Mean loss over the last ``window`` steps of each phase (how well each target was fitted)."""
    ends = range(switch_every, len(loss) + 1, switch_every)
    return np.array([loss[e - window : e].mean() for e in ends])


def nonstationary_figure(runs: dict[tuple[int, bool], dict[str, np.ndarray]], lr: float = 1e-3) -> plt.Figure:
    """Hidden weight norm, effective learning rate and fresh-batch loss over environment steps."""
    fig, axes = figure(ncols=3, height=3.2)
    styles = {1: ":", 5: "--", 20: "-"}
    for (utd, project), run in runs.items():
        colour = PALETTE["weightnorm"] if project else PALETTE["batchnorm"]
        label = f"{'BN + WN' if project else 'BN'}, UTD {utd}"
        kw = {"color": colour, "ls": styles.get(utd, "-"), "lw": 1.2, "label": label}
        axes[0].plot(run["norm"], **kw)
        axes[1].plot(run["elr"] / lr, **kw)
        axes[2].plot(np.convolve(run["loss"], np.ones(5) / 5, mode="valid"), **kw)
    axes[0].set(title="norms grow without WN,\nfaster at higher UTD", ylabel=r"$\sum_l \|W_l\|_F$")
    axes[1].set(title="the effective rate falls", ylabel=r"mean of $(\eta/\|w_i\|^2)\,/\,\eta$")
    axes[2].set(title="fresh-batch loss (5-step\nmean): no clear difference", ylabel="MSE", yscale="log")
    axes[2].yaxis.set_minor_formatter(mticker.NullFormatter())
    for ax in axes:
        ax.set_xlabel("environment step")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=6, fontsize=7.5)
    return fig


# --------------------------------------------------------------------------------------------------
# Demo 3: L1 weight norm and the 1-path-norm (Biswas 2024)
# --------------------------------------------------------------------------------------------------


def l1_weight_norm(v: Tensor, g: Tensor, eps: float = 0.0) -> Tensor:
    """w = g · v/‖v‖₁ per output unit (row of v), with the L1 norm ‖v‖₁ = Σ_j |v_j|.

    ``g`` is one gain per row (shape (out,)) or one gain for the whole layer (a 0-d tensor, as in
    Biswas's PSiLON Net, where g may be negative). Plain torch ops, so every derivative order works.

    >>> w = l1_weight_norm(torch.tensor([[3.0, -1.0], [0.0, 2.0]]), torch.tensor(2.0))
    >>> w.abs().sum(1).tolist()
    [2.0, 2.0]
    """
    eps = check_eps(eps)
    if v.ndim != 2:
        raise ValueError(f"l1_weight_norm expects an (out, in) matrix, got shape {tuple(v.shape)}")
    if g.ndim > 1 or (g.ndim == 1 and g.shape[0] != v.shape[0]):
        raise ValueError(
            f"g has shape {tuple(g.shape)} but v has {v.shape[0]} rows: pass one gain per row, shape "
            f"({v.shape[0]},), or one for the layer, a 0-d tensor"
        )
    norm = v.abs().sum(dim=1, keepdim=True) + eps
    return (g.reshape(-1, 1) if g.ndim == 1 else g) * v / norm


def path_norm_brute_force(weights: list[Tensor]) -> float:
    """The 1-path-norm Σ_paths Π_l |W_l[i_l, i_{l−1}]|, summed over every input-to-output path.

    ``weights`` are (out, in) matrices, first layer first. Biases start no input-to-output path, so
    they do not enter (the usual definition; see :func:`path_norm`).
    """
    sizes = [weights[0].shape[1]] + [w.shape[0] for w in weights]
    total = 0.0
    for path in itertools.product(*(range(n) for n in sizes)):
        prod = 1.0
        for layer, w in enumerate(weights):
            prod *= abs(w[path[layer + 1], path[layer]].item())
        total += prod
    return total


def path_norm(weights: list[Tensor]) -> Tensor:
    """The 1-path-norm as a matrix product, 1ᵀ |W_L| ⋯ |W_1| 1 (differentiable)."""
    x = torch.ones(weights[0].shape[1], dtype=weights[0].dtype)
    for w in weights:
        x = w.abs() @ x
    return x.sum()


def relu_net(x: Tensor, weights: list[Tensor], biases: list[Tensor] | None = None) -> Tensor:
    """A ReLU MLP: ReLU after every layer but the last; ``biases=None`` means no biases."""
    for k, w in enumerate(weights):
        x = x @ w.T + (biases[k] if biases is not None else 0.0)
        if k < len(weights) - 1:
            x = torch.relu(x)
    return x


def random_l1_network(
    sizes: list[int], shared_g: bool = True, seed: int = 0
) -> tuple[list[Tensor], list[Tensor]]:
    """Weights W_l = l1_weight_norm(V_l, g_l) of a random network with layer widths ``sizes``, and
    random biases. ``shared_g``: one (possibly negative) gain per layer, else one per unit."""
    gen = torch.Generator().manual_seed(seed)
    weights, biases = [], []
    for n_in, n_out in itertools.pairwise(sizes):
        v = torch.randn(n_out, n_in, generator=gen, dtype=torch.float64)
        shape = () if shared_g else (n_out,)
        g = (torch.rand(shape, generator=gen, dtype=torch.float64) * 3 - 1.5)
        weights.append(l1_weight_norm(v, g))
        biases.append(torch.randn(n_out, generator=gen, dtype=torch.float64))
    return weights, biases


def layer_gains(weights: list[Tensor]) -> list[Tensor]:
    """Each layer's row L1 norms ‖w_i‖₁ = |g_i| (recovered from the weights)."""
    return [w.abs().sum(1) for w in weights]


def lipschitz_check(
    weights: list[Tensor], biases: list[Tensor] | None, n: int = 2000, seed: int = 0
) -> float:
    """max over random input pairs of ‖f(x) − f(x')‖₁ / ‖x − x'‖_∞ (a lower estimate of the Lipschitz
    constant that the 1-path-norm bounds from above)."""
    gen = torch.Generator().manual_seed(seed)
    d = weights[0].shape[1]
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    x2 = x + 0.1 * torch.randn(n, d, generator=gen, dtype=torch.float64)
    num = (relu_net(x, weights, biases) - relu_net(x2, weights, biases)).abs().sum(1)
    return (num / (x - x2).abs().amax(1)).max().item()


def tabular_split(n_train: int = 150, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's bundled breast-cancer data (569 × 30), standardized on a random training split
    of ``n_train`` examples; the rest is the test set. Returns x_train, y_train, x_test, y_test."""
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    perm = np.random.default_rng(seed).permutation(len(y))
    x, y = torch.tensor(x[perm]), torch.tensor(y[perm], dtype=torch.float64)
    mu, sigma = x[:n_train].mean(0), x[:n_train].std(0)
    x = (x - mu) / sigma
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _init_params(kind: str, sizes: list[int], gen: torch.Generator) -> list[dict[str, Tensor]]:
    layers = []
    for n_in, n_out in itertools.pairwise(sizes):
        v = torch.randn(n_out, n_in, generator=gen, dtype=torch.float64) / math.sqrt(n_in)
        layer = {"v": v, "b": torch.zeros(n_out, dtype=torch.float64)}
        if kind == "l2":
            layer["g"] = torch.linalg.vector_norm(v, dim=1)
        elif kind == "l1":
            layer["g"] = v.abs().sum(1).mean()  # one gain for the layer (PSiLON)
        layers.append({k: t.requires_grad_() for k, t in layer.items()})
    return layers


def _weights(kind: str, layers: list[dict[str, Tensor]]) -> list[Tensor]:
    if kind == "plain":
        return [p["v"] for p in layers]
    if kind == "l2":
        return [p["g"].reshape(-1, 1) * p["v"] / torch.linalg.vector_norm(p["v"], dim=1, keepdim=True)
                for p in layers]
    return [l1_weight_norm(p["v"], p["g"]) for p in layers]


def near_zero_fraction(weights: list[Tensor], tol: float = 1e-3) -> float:
    """Fraction of weights with |w_ij| < tol · ‖w_i‖₁ (near-zero relative to their unit's L1 norm)."""
    rel = torch.cat([(w.abs() / w.abs().sum(1, keepdim=True)).flatten() for w in weights])
    return (rel < tol).double().mean().item()


def sparsity_run(
    kind: str, lam: float = 1e-3, steps: int = 1500, lr: float = 1e-2, hidden: int = 32, seed: int = 0
) -> dict[str, float]:
    """Train a 30-hidden-hidden-1 ReLU network on :func:`tabular_split` with logistic loss + λ·(1-path-norm),
    full batch, Adam. ``kind``: "plain" (W = V), "l2" (eq. 2, one g per unit) or "l1" (W = g·V/‖V‖₁ per
    row, one g per layer, so the path norm is d_out · Π_l |g_l|, computed that way)."""
    if kind not in ("plain", "l2", "l1"):
        raise ValueError(f"kind must be 'plain', 'l2' or 'l1', got {kind!r}")
    x, y, x_test, y_test = tabular_split(seed=seed)
    gen = torch.Generator().manual_seed(seed)
    layers = _init_params(kind, [x.shape[1], hidden, hidden, 1], gen)
    opt = torch.optim.Adam([t for p in layers for t in p.values()], lr=lr)
    for _ in range(steps):
        ws = _weights(kind, layers)
        logits = relu_net(x, ws, [p["b"] for p in layers]).squeeze(-1)
        pn = math.prod(p["g"].abs() for p in layers) if kind == "l1" else path_norm(ws)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, y) + lam * pn
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        ws = _weights(kind, layers)
        test = relu_net(x_test, ws, [p["b"] for p in layers]).squeeze(-1)
        return {"test accuracy": ((test > 0).double() == y_test).double().mean().item(),
                "near-zero fraction": near_zero_fraction(ws), "path norm": path_norm(ws).item()}


# --------------------------------------------------------------------------------------------------
# Demo 4: the smallest ‖v_k‖ and the Hessian of weight-normalized MLPs (Cisneros-Velarde et al. 2024)
# --------------------------------------------------------------------------------------------------


def digits_split(
    n_train: int = 512, n_test: int = 512, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's bundled 8×8 digits, pixels scaled to [0, 1], one-hot targets (for the MSE loss)."""
    x, y = raw_digits()
    perm = np.random.default_rng(seed).permutation(len(y))[: n_train + n_test]
    x = torch.tensor(x[perm] / 16.0, dtype=torch.float64)
    y = nn.functional.one_hot(torch.tensor(y[perm]), 10).double()
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def wn_mlp(sizes: list[int], v_scale: float = 1.0, seed: int = 0) -> list[Tensor]:
    """Parameters [v_1, g_1, b_1, …] of a weight-normalized MLP; v ~ N(0, v_scale²/fan_in), g = 1, b = 0.

    ``v_scale`` changes ‖v‖ but not the function (eq. 2 depends on v only through v/‖v‖)."""
    gen = torch.Generator().manual_seed(seed)
    params = []
    for n_in, n_out in itertools.pairwise(sizes):
        v = v_scale * torch.randn(n_out, n_in, generator=gen, dtype=torch.float64) / math.sqrt(n_in)
        params += [v, torch.ones(n_out, dtype=torch.float64), torch.zeros(n_out, dtype=torch.float64)]
    return [p.requires_grad_() for p in params]


def wn_forward(params: list[Tensor], x: Tensor) -> Tensor:
    """The WN MLP: w = g · v/‖v‖ per unit (eq. 2) from plain torch ops, tanh between layers."""
    n_layers = len(params) // 3
    for k in range(n_layers):
        v, g, b = params[3 * k : 3 * k + 3]
        w = g.unsqueeze(1) * v / v.norm(dim=1, keepdim=True)
        x = x @ w.T + b
        if k < n_layers - 1:
            x = torch.tanh(x)
    return x


def min_v_norm(params: list[Tensor]) -> float:
    """min_k ‖v_k‖ over every unit of every layer (the normalization term in the Hessian bound)."""
    return min(p.detach().norm(dim=1).min().item() for p in params[0::3])


def top_hessian_eigenvalue(loss_fn, params: list[Tensor], n_iter: int = 20, seed: int = 0) -> float:
    """The largest-magnitude eigenvalue of ∇²loss by power iteration on Hessian-vector products
    (double backward through :func:`wn_forward`); returns the Rayleigh quotient uᵀHu, ‖u‖ = 1."""
    gen = torch.Generator().manual_seed(seed)
    grads = torch.autograd.grad(loss_fn(params), params, create_graph=True)
    u = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
    lam = 0.0
    for _ in range(n_iter):
        norm = math.sqrt(sum((t * t).sum().item() for t in u))
        u = [t / norm for t in u]
        hu = torch.autograd.grad(grads, params, grad_outputs=u, retain_graph=True)
        lam = sum((a * b).sum().item() for a, b in zip(u, hu, strict=True))
        u = [h.detach() for h in hu]
    return lam


def hessian_run(
    width: int, depth: int, v_scale: float = 1.0, steps: int = 100, every: int = 20, lr: float = 0.1,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Full-batch gradient descent on :func:`digits_split` with the MSE loss, recording min_k ‖v_k‖ and
    the top loss-Hessian eigenvalue every ``every`` steps, and the train and test loss at the end.
    ``depth`` counts the hidden layers (each ``width`` wide)."""
    x, y, x_test, y_test = digits_split(seed=seed)
    params = wn_mlp([64] + [width] * depth + [10], v_scale=v_scale, seed=seed)

    def loss_fn(ps: list[Tensor], xx: Tensor = x, yy: Tensor = y) -> Tensor:
        return 0.5 * (wn_forward(ps, xx) - yy).square().sum(1).mean()

    rec = {"step": [], "min |v|": [], "lambda_max": []}
    for step in range(steps + 1):
        if step % every == 0:
            rec["step"].append(step)
            rec["min |v|"].append(min_v_norm(params))
            rec["lambda_max"].append(top_hessian_eigenvalue(loss_fn, params))
        if step == steps:
            break
        grads = torch.autograd.grad(loss_fn(params), params)
        with torch.no_grad():
            for p, d in zip(params, grads, strict=True):
                p.sub_(lr * d)
    out = {k: np.asarray(v) for k, v in rec.items()}
    with torch.no_grad():
        out["train loss"], out["test loss"] = loss_fn(params).item(), loss_fn(params, x_test, y_test).item()
    return out


def rescaled_v_hessian(width: int = 64, depth: int = 2, scales: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0),
                       seed: int = 0) -> dict[float, tuple[float, float]]:
    """For v → c·v at a fixed function: (loss, top eigenvalue of the loss Hessian w.r.t. the v's only).

    f(c·v) = f(v), so ∇²_v f scales as 1/c²: the exact form of "inversely with the weight norm"."""
    x, y, _, _ = digits_split(seed=seed)
    base = wn_mlp([64] + [width] * depth + [10], seed=seed)
    out = {}
    for c in scales:
        vs = [(p.detach() * c).requires_grad_() for p in base[0::3]]
        rest = [p.detach() for p in base]

        def loss_fn(v_list: list[Tensor], rest: list[Tensor] = rest) -> Tensor:
            ps = [v_list[i // 3] if i % 3 == 0 else t for i, t in enumerate(rest)]
            return 0.5 * (wn_forward(ps, x) - y).square().sum(1).mean()

        out[c] = (loss_fn(vs).item(), top_hessian_eigenvalue(loss_fn, vs))
    return out


# --------------------------------------------------------------------------------------------------
# Demo 5: same name, different thing (p-MoD, XFT, AGR)
# --------------------------------------------------------------------------------------------------


def pmod_router_weights(x: Tensor, mode: str = "tanh", router: nn.Linear | None = None) -> Tensor:
    """Per-token weights of a p-MoD router r = Linear(hidden → 1)(x), zero-initialized as in the
    authors' code unless ``router`` is given: "tanh" is their TanhNorm 0.2·tanh(r) + 1; "sigmoid" and
    "softmax" (over the tokens) are the alternatives their code offers. ``x`` is (tokens, hidden)."""
    if router is None:
        router = nn.Linear(x.shape[-1], 1, dtype=x.dtype)
        nn.init.zeros_(router.weight)
        nn.init.zeros_(router.bias)
    r = router(x).squeeze(-1)
    if mode == "tanh":
        return 0.2 * torch.tanh(r) + 1
    if mode == "sigmoid":
        return torch.sigmoid(r)
    if mode == "softmax":
        return torch.softmax(r, dim=0)
    raise ValueError(f"mode must be 'tanh', 'sigmoid' or 'softmax', got {mode!r}")


def xft_routing_weights(logits: Tensor, k: int = 5) -> tuple[Tensor, Tensor]:
    """XFT's shared-expert routing (``TopKUniversalBalancedNoisyGate`` in the authors' code).

    s = softmax over the routed experts' logits, sorted; the top-k routed experts get
    softmax(s_1..s_k) · s_1 and the always-on shared expert gets 1 − s_1. Returns (routed weights
    (tokens, k), shared weight (tokens,)); every token's weights sum to 1."""
    s = torch.softmax(logits, dim=-1).sort(dim=-1, descending=True).values[:, :k]
    routed = torch.softmax(s, dim=-1) * s[:, :1]
    return routed, 1 - s[:, 0]


def upcycled_output_ratio(tokens: int = 16, hidden: int = 8, experts: int = 7, k: int = 5,
                          seed: int = 0) -> dict[str, float]:
    """‖MoE(x)‖/‖FFN(x)‖ right after upcycling (every expert a copy of the dense FFN), for XFT's weights
    and for a naive shared expert at weight 1 plus routed softmax weights that sum to 1."""
    gen = torch.Generator().manual_seed(seed)
    ffn = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.SiLU(), nn.Linear(4 * hidden, hidden))
    x = torch.randn(tokens, hidden, generator=gen)
    logits = torch.randn(tokens, experts, generator=gen)
    with torch.no_grad():
        y = ffn(x)  # every expert computes this, so the MoE output is (Σ weights) · y
        routed, shared = xft_routing_weights(logits, k)
        xft = (routed.sum(1) + shared).unsqueeze(1) * y
        naive = (torch.softmax(logits.topk(k, dim=1).values, 1).sum(1) + 1).unsqueeze(1) * y
    return {"XFT": (xft.norm() / y.norm()).item(), "shared at 1 + routed": (naive.norm() / y.norm()).item()}


def agr_gradient(grad: Tensor) -> Tensor:
    """Adaptive gradient regularization (the authors' AGR.py): α = |∇|/Σ|∇| over the whole tensor,
    ∇ ← ∇ − α ⊙ ∇. A one-element tensor has α = 1, so its gradient becomes 0."""
    alpha = grad.abs() / grad.abs().sum()
    return grad - alpha * grad


def agr_report(seed: int = 0) -> dict[str, tuple[int, float, float]]:
    """AGR applied to the gradients of a small WN MLP on digits, plus one scalar gain on its output:
    per tensor, (numel, max α, ‖∇ − AGR(∇)‖/‖∇‖)."""
    x, y, _, _ = digits_split(n_train=256, n_test=0, seed=seed)
    params = wn_mlp([64, 32, 10], seed=seed)
    scale = torch.ones((), dtype=torch.float64, requires_grad=True)
    loss = 0.5 * (scale * wn_forward(params, x) - y).square().sum(1).mean()
    names = ["v_1", "g_1", "b_1", "v_2", "g_2", "b_2", "scalar gain"]
    grads = torch.autograd.grad(loss, [*params, scale])
    out = {}
    for name, grad in zip(names, grads, strict=True):
        alpha = grad.abs() / grad.abs().sum()
        change = (grad - agr_gradient(grad)).norm() / grad.norm()
        out[name] = (grad.numel(), alpha.max().item(), change.item())
    return out


def hessian_figure(runs: dict[tuple[int, int, float], dict[str, np.ndarray]], lr: float) -> plt.Figure:
    """Top loss-Hessian eigenvalue against min_k ‖v_k‖ at every checkpoint of every run (log–log)."""
    fig, ax = figure(height=3.2)
    colours = {1: PALETTE["weightnorm_init"], 2: PALETTE["weightnorm"], 3: PALETTE["weightnorm_meanonly"]}
    markers = {16: "o", 64: "s", 256: "^"}
    seen = set()
    for (width, depth, _), run in runs.items():
        label = f"width {width}, depth {depth}"
        ax.plot(run["min |v|"], run["lambda_max"], marker=markers.get(width, "o"), ls="-", lw=0.6,
                color=colours.get(depth, "k"), ms=4, label=None if label in seen else label, alpha=0.85)
        seen.add(label)
    ax.axhline(2 / lr, color="0.4", ls=":", lw=1)
    ax.annotate("2/η", (ax.get_xlim()[0], 2 / lr), textcoords="offset points", xytext=(4, 3), fontsize=8)
    ax.set(xscale="log", yscale="log", xlabel="min_k ‖v_k‖", ylabel="top eigenvalue of ∇²loss",
           title="the Hessian is sharpest where some ‖v_k‖ is small; gradient descent then grows ‖v‖")
    ax.legend(fontsize=7, ncols=2)
    return fig
