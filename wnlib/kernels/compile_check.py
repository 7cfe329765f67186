"""Compile the weight-norm kernels for a GPU that is not here, and report their resources.

Triton's interpreter (how the tests run the kernels on CPU) executes the kernel bodies with NumPy; it
does not compile them, so it cannot catch what only the compiler sees (scoping of ``constexpr``
branches, unsupported ops for a dtype, register spills). This tool runs the real host code of
:mod:`wnlib.kernels.triton_wn` on ``meta``-device tensors (shapes and dtypes, no memory), records
every kernel launch it would make with the launch plan chosen for an H100 (132 SMs), specializes
the arguments exactly as Triton's launcher does (16-byte alignment, ints divisible by 16, ints equal
to 1), and compiles each distinct kernel to a cubin for ``--arch`` (default 90, Hopper) with the
bundled ``ptxas``. It prints registers, spills (local memory), shared memory and the widest global
load per kernel, and exits non-zero if any compile fails (or, with ``--strict``, if any spills).

    TRITON_INTERPRET=0 python -m wnlib.kernels.compile_check [--arch 90] [--quick] [--strict]

No GPU is needed (only the ``triton`` package). It checks that the kernels compile and how heavy
they are, not that they are fast.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from wnlib._defaults import DEFAULT_EPS

__all__ = [
    "CASES",
    "H100_SMS",
    "QUICK",
    "Launch",
    "compile_launch",
    "main",
    "record_launches",
    "specialize",
]

#: Streaming multiprocessors of an H100, for which the launch plans are made.
H100_SMS = 132

#: The cases compiled, as (label, shape, dim, dtype), the benchmark's shapes plus every layout, split and
#: dtype.
CASES: list[tuple[str, tuple[int, ...], int | None, torch.dtype]] = [
    ("linear 16384² dim 0", (16384, 16384), 0, torch.float32),
    ("linear 16384² dim 0", (16384, 16384), 0, torch.bfloat16),
    ("linear 4096² dim 0", (4096, 4096), 0, torch.float32),
    ("linear 1024² dim 0", (1024, 1024), 0, torch.float32),
    ("linear 256² dim 0", (256, 256), 0, torch.float32),
    ("linear 4096² dim -1", (4096, 4096), -1, torch.float32),
    ("linear 4096² dim None", (4096, 4096), None, torch.float32),
    ("linear 10×65536 dim 0", (10, 65536), 0, torch.float32),
    ("conv 512×512×3×3 dim 0", (512, 512, 3, 3), 0, torch.float32),
    ("convT 512×512×3×3 dim 1", (512, 512, 3, 3), 1, torch.float32),
    ("linear 4096² dim 0", (4096, 4096), 0, torch.float16),
    ("linear 4096² dim 0", (4096, 4096), 0, torch.float64),
    ("linear 1024² dim -1", (1024, 1024), -1, torch.float64),
    ("2^31 elements dim 0", (65536, 32768), 0, torch.float32),
]
#: The indices into :data:`CASES` that ``--quick`` compiles.
QUICK = [0, 5, 6, 9, 11]


@dataclass
class Launch:
    kernel: Any
    grid: tuple[int, int]
    args: tuple[Any, ...]
    meta: dict[str, Any]


def record_launches(
    shape: tuple[int, ...], dim: int | None, dtype: torch.dtype, n_sm: int = H100_SMS
) -> list[Launch]:
    """Run the host side of forward and backward on meta tensors; return the launches it makes."""
    from wnlib.kernels import triton_wn as T

    launches: list[Launch] = []

    def record(kernel: Any, grid: tuple[int, int], *args: Any, **meta: Any) -> None:
        launches.append(Launch(kernel, grid, args, meta))

    v = torch.empty(shape, dtype=dtype, device="meta")
    d = None if dim is None else dim % len(shape)
    A, S, B = T.view_3d(shape, d)
    g = torch.empty(S, dtype=dtype, device="meta")
    plan = T.make_plan(A, S, B, v.element_size(), n_sm)
    original = T._launch
    T._launch = record
    try:
        _, norm = T.forward(v, g, dim, DEFAULT_EPS, plan=plan)
        T.backward(torch.empty_like(v), v, g, norm, dim, plan=plan)
    finally:
        T._launch = original
    return launches


def specialize(launch: Launch) -> tuple[dict[str, str], dict[tuple[int], Any], dict[tuple[int], Any]]:
    """(signature, constexprs, attrs) as Triton's launcher would build them for these arguments."""
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend

    kernel = launch.kernel
    values = dict(zip(kernel.arg_names, launch.args, strict=False))
    values.update({k: v for k, v in launch.meta.items() if k in kernel.arg_names})
    signature: dict[str, str] = {}
    constexprs: dict[tuple[int], Any] = {}
    attrs: dict[tuple[int], Any] = {}
    for i, param in enumerate(kernel.params):
        value = values[param.name]
        if param.is_constexpr:
            signature[param.name] = "constexpr"
            constexprs[(i,)] = value
            continue
        ty, desc = native_specialize_impl(BaseBackend, value, False, True, True)
        if ty == "constexpr":
            signature[param.name] = "constexpr"
            constexprs[(i,)] = desc
        else:
            signature[param.name] = ty
            if desc:
                attrs[(i,)] = BaseBackend.parse_attr(desc)
    return signature, constexprs, attrs


def _cuobjdump() -> Path:
    import triton

    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


def compile_launch(launch: Launch, arch: int) -> dict[str, Any]:
    """Compile one launch for ``sm_<arch>``; return its resource usage."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature, constexprs, attrs = specialize(launch)
    source = ASTSource(launch.kernel, signature, constexprs, attrs)
    options = {"num_warps": launch.meta.get("num_warps", 4)}
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
    info: dict[str, Any] = {"num_warps": options["num_warps"]}
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        out = subprocess.run(
            [str(_cuobjdump()), "--dump-resource-usage", f.name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", out)
    if m:
        info.update(regs=int(m[1]), stack=int(m[2]), shared=int(m[3]), local=int(m[4]))
    widths = [
        int(n) * int(bits)
        for n, bits in re.findall(r"ld\.global[\.\w]*?\.v(\d)\.[bf](\d+)", compiled.asm["ptx"])
    ]
    scalar = re.findall(r"ld\.global[\.\w]*?\.[bf](\d+)\s", compiled.asm["ptx"])
    info["widest_load_bits"] = max(widths + [int(b) for b in scalar] + [0])
    return info


def _key(launch: Launch) -> str:
    signature, constexprs, _ = specialize(launch)
    return f"{launch.kernel.__name__}{sorted(signature.items())}{sorted(constexprs.items())}" + str(
        launch.meta.get("num_warps")
    )


def main(argv: list[str] | None = None) -> int:
    """Compile every case for ``--arch`` and print each kernel's resources; the exit status (0, 1 or 2)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 for H100")
    parser.add_argument("--quick", action="store_true", help="a few representative cases only")
    parser.add_argument("--strict", action="store_true", help="also fail if a kernel spills")
    args = parser.parse_args(argv)

    from wnlib.kernels import available

    if not available():
        print("compile_check: triton is not importable", file=sys.stderr)
        return 2
    from wnlib.kernels import triton_wn as T

    if T.interpreted():
        print(
            "compile_check: TRITON_INTERPRET is set, so Triton builds interpreted kernels; "
            "run with TRITON_INTERPRET=0",
            file=sys.stderr,
        )
        return 2

    cases = [CASES[i] for i in QUICK] if args.quick else CASES
    seen: set[str] = set()
    failures = spills = 0
    print(f"sm_{args.arch}, plans for {H100_SMS} SMs, triton {__import__('triton').__version__}")
    print(
        f"{'case':28} {'dtype':9} {'kernel':20} {'grid':>12} {'warps':>5} {'regs':>4} "
        f"{'local':>5} {'shared':>6} {'load':>5}"
    )
    for label, shape, dim, dtype in cases:
        for launch in record_launches(shape, dim, dtype):
            key = _key(launch)
            if key in seen:
                continue
            seen.add(key)
            name = launch.kernel.__name__
            try:
                info = compile_launch(launch, args.arch)
            except Exception as exc:  # report every failure, then exit non-zero
                failures += 1
                print(f"{label:28} {str(dtype)[6:]:9} {name:20} FAILED: {type(exc).__name__}: {exc}")
                continue
            spills += info.get("local", 0) > 0
            print(
                f"{label:28} {str(dtype)[6:]:9} {name:20} {launch.grid!s:>12} "
                f"{info['num_warps']:>5} {info.get('regs', '?'):>4} {info.get('local', '?'):>5} "
                f"{info.get('shared', '?'):>6} {info['widest_load_bits']:>5}"
            )
    print(f"{len(seen)} kernels compiled, {failures} failed, {spills} spill to local memory")
    if failures or (args.strict and spills):
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TRITON_INTERPRET", "0")
    sys.exit(main())
