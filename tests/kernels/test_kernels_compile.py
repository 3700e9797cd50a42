"""Every Triton kernel compiles for an H100 (sm_90) on the CPU, with each Triton we support.

The other kernel tests run the kernels in Triton's interpreter, which executes them as Python
and accepts code the compiler rejects (a chained comparison such as ``0 < a < b`` passed every
interpreter test and failed on the GPU). Compiling needs no GPU: Triton ships its own ``ptxas``.
So this file, run as a script in a process without ``TRITON_INTERPRET``, compiles each kernel
to a cubin for sm_90 with the constexpr combinations its launcher uses (the tests below do
that), once with the installed Triton and once with the oldest one ``pyproject.toml`` accepts
(the one torch's GPU builds pin), which ``.ci/run`` installs beside it: a construct that only
one Triton's compiler accepts (a reduction accumulated in a nested loop crashed Triton 3.6's
MLIR passes while 3.8 compiled it) fails here. Compiling is still not running: a change under
``dit_sparse/`` lands with a ``benchmarks/gpu_smoke.py`` record from a GPU (see the README).
It uses Triton's compiler internals (`ASTSource`, the CUDA backend), which may move between
Triton versions.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

# `.ci/run` installs the oldest supported Triton here (pip install --target): its compiler is
# the one a GPU with torch's pinned Triton runs.
ROOT = Path(__file__).resolve().parents[2]
FLOOR_TRITON = ROOT / ".ci" / "triton-floor"


def _script_env(extra_path: Path | None = None) -> dict[str, str]:
    """The environment of the script: no interpreter, and this checkout's ``dit_sparse`` first
    (not one installed from another worktree), after ``extra_path`` if given."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    paths = [str(extra_path) if extra_path else "", str(ROOT), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    return env


def _compile_all(extra_path: Path | None = None) -> str:
    env = _script_env(extra_path)
    done = subprocess.run(
        [sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    expected = "compiled 15 kernel variants for sm_90; the chained comparison was rejected"
    assert expected in done.stdout, done.stdout
    return done.stdout


def test_kernels_compile_for_sm90():
    _compile_all()


def test_kernels_compile_for_sm90_with_the_oldest_supported_triton():
    if not (FLOOR_TRITON / "triton").is_dir():
        pytest.skip(
            f"no floor Triton in {FLOOR_TRITON}: `bash .ci/run` installs it "
            "(pip install --no-deps --target .ci/triton-floor 'triton==<floor>.*')"
        )
    pyproject = (FLOOR_TRITON.parents[1] / "pyproject.toml").read_text()
    floor = re.search(r'"triton>=([0-9.]+)', pyproject).group(1)
    out = _compile_all(FLOOR_TRITON)
    assert out.startswith(f"Triton {floor}"), out


def _ptxas_path(triton):
    from pathlib import Path

    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"


def test_svg_profiling_pass_compiles_without_spills():
    """SVG's profiling pass holds three [rows, D] fp32 accumulators: at the launcher's tiles for
    D = 128 they must fit the registers of an H100/H200, since spilling cost it about a third of
    its speed (benchmarks/probes/svg_profiling_registers-h200.json). Compiled for sm_90 and
    counted by ptxas, which ships with Triton; no GPU needed. Triton 3.6 spilled nothing there;
    3.8 spills 8 bytes. The 4-warp tiles this replaced spilled 1,416 bytes."""
    import triton

    if not _ptxas_path(triton).exists():
        pytest.skip("this Triton ships no ptxas to count registers with")
    env = _script_env()
    done = subprocess.run(
        [sys.executable, __file__, "--spills"], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    spilled = re.search(r"profiling pass: (\d+) bytes spilled", done.stdout)
    assert spilled, done.stdout + done.stderr
    assert int(spilled.group(1)) <= 32


def _profiling_pass_spills() -> None:
    import tempfile
    from pathlib import Path

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from dit_sparse.kernels import masked_rows

    fn = masked_rows._masked_rows_partial
    rows, warps = masked_rows._GPU_TILES[128]
    constexprs = dict(HEAD_DIM=128, ROW_TILE=rows, BLOCK_N=masked_rows._BLOCK_N)
    constexprs["DOT_PRECISION"] = "tf32"
    pointers = {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "ROWS": "*i64", "TOKEN_BLOCKS": "*i64"}
    pointers |= {"KEEP_BITS": "*u8", "WS_M": "*fp32", "WS_L": "*fp32", "WS_ACC": "*fp32"}
    signature = {
        name: "constexpr" if name in constexprs else pointers.get(name, "i32")
        for name in fn.arg_names
    }
    signature["qk_scale"] = "fp32"
    # What a launch on contiguous [B, H, S, 128] tensors specialises: aligned pointers, and
    # strides and sizes that are multiples of 16.
    aligned = [*pointers, "stride_qb", "stride_qh", "stride_qs", "stride_kb", "stride_kh"]
    aligned += ["stride_ks", "stride_vb", "stride_vh", "stride_vs", "padded_rows"]
    aligned += ["keys_per_split"]
    attrs = {(fn.arg_names.index(name),): [["tt.divisibility", 16]] for name in aligned}
    source = ASTSource(fn, signature=signature, constexprs=constexprs, attrs=attrs)
    options = {"num_warps": warps, "num_stages": masked_rows._GPU_STAGES}
    kernel = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)
    ptxas = _ptxas_path(triton)
    with tempfile.TemporaryDirectory() as tmp:
        ptx = Path(tmp) / "pass.ptx"
        ptx.write_text(kernel.asm["ptx"])
        report = subprocess.run(
            [str(ptxas), "-v", "--gpu-name=sm_90a", str(ptx), "-o", str(Path(tmp) / "pass.o")],
            capture_output=True,
            text=True,
            check=True,
        )
    spilled = re.search(r"(\d+) bytes spill stores", report.stderr + report.stdout)
    print(f"profiling pass: {spilled.group(1) if spilled else 'unknown'} bytes spilled")


def _lower_all() -> None:
    import importlib
    import inspect

    import triton
    import triton.language as tl
    from triton._C.libtriton import ir
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import CUDABackend
    from triton.compiler import ASTSource

    # The modules, not the functions of the same name that dit_sparse.kernels exports.
    attention, attention_8bit, block_mass, block_select, kmeans, masked_rows = (
        importlib.import_module(f"dit_sparse.kernels.{name}")
        for name in (
            "block_sparse_attention", "attention_8bit", "block_mass", "block_select", "kmeans",
            "masked_rows",
        )
    )  # fmt: skip

    target = GPUTarget("cuda", 90, 32)
    backend = CUDABackend(target)

    def lower(fn, constexprs, types, compile_to_cubin=True, options=None):
        """Compile ``fn`` for sm_90 (to Triton IR only with ``compile_to_cubin=False``) with
        ``options`` (default 4 warps); arguments not named are i32, ``None`` ones constexpr."""
        signature = {
            name: "constexpr" if name in constexprs else types.get(name, "i32")
            for name in fn.arg_names
        }
        source = ASTSource(fn, signature=signature, constexprs=constexprs)
        if compile_to_cubin:
            triton.compile(source, target=target, options=options or {"num_warps": 4})
            return
        options = backend.parse_options({})
        context = ir.context()
        ir.load_dialects(context)
        backend.load_dialects(context)
        args = (options, backend.get_codegen_implementation(options), backend.get_module_map())
        if "target" in inspect.signature(source.make_ir).parameters:
            args = (target, *args)
        source.make_ir(*args, context)

    @triton.jit
    def _chained_comparison(X, N: tl.constexpr, M: tl.constexpr):
        G: tl.constexpr = N // M if 0 < M < N else 1
        tl.store(X, G)

    try:
        lower(_chained_comparison, {"N": 8, "M": 2}, {"X": "*fp32"}, compile_to_cubin=False)
    except Exception as error:  # noqa: BLE001 - the compiler's error type varies by version
        rejected = "comparison" in str(error)
    else:
        rejected = False

    qkv = {"Q": "*bf16", "K": "*bf16", "V": "*bf16"}
    count = 0
    attention_types = {
        **qkv,
        "Out": "*bf16",
        "LSE": "*fp32",
        "KV_IDX": "*i32",
        "KV_CNT": "*i32",
        "PERM": "*i64",
        "PERMUTED": "*u8",
        "HEAD_PLANS": "*i64",
        "KP": "*bf16",
        "VP": "*bf16",
        "MASS_SUMS": "*fp32",
        "MASS_LSE": "*fp32",
        "qk_scale": "fp32",
    }
    base = dict(HEAD_DIM=128, BLOCK_M=128, BLOCK_N=64, BLOCK_Q=128, BLOCK_K=128)
    base.update(EVEN_K=False, DOT_PRECISION="tf32")
    plain = dict(HAS_PERM=False, HAS_HEAD_PLANS=False, RETURN_LSE=False, MASS_ROWS=0)
    plain.update(MASS_CHUNK=0, PERM=None, PERMUTED=None, HEAD_PLANS=None, KP=None, VP=None)
    plain.update(MASS_SUMS=None, MASS_LSE=None, LSE=None)
    # Sparse VideoGen's plans: shared per kind, picked per head, the temporal one permuted.
    permuted = {**plain, "HAS_PERM": True, "HAS_HEAD_PLANS": True, "RETURN_LSE": True}
    for name in ("PERM", "PERMUTED", "HEAD_PLANS", "KP", "VP", "LSE"):
        del permuted[name]
    fused_mass = dict(plain, RETURN_LSE=True, MASS_ROWS=16, MASS_CHUNK=64)
    for name in ("MASS_SUMS", "MASS_LSE", "LSE"):
        del fused_mass[name]
    for variant in (plain, permuted, fused_mass):
        lower(attention._block_sparse_attention_fwd, {**base, **variant}, attention_types)
        count += 1
    lower(
        attention._permute_kv,
        {"HEAD_DIM": 128, "BLOCK_S": 64, "HAS_HEAD_PLANS": True},
        {
            "K": "*bf16",
            "V": "*bf16",
            "KP": "*bf16",
            "VP": "*bf16",
            "KEY_PERM": "*i64",
            "PERMUTED": "*u8",
            "HEAD_PLANS": "*i64",
        },
    )
    lower(
        block_mass._block_mass_fwd,
        dict(HEAD_DIM=128, BLOCK_M=128, BLOCK_N=128, GROUP_ROWS=16, CHUNK=64)
        | {"DOT_PRECISION": "tf32"},
        {**qkv, "LSE": "*fp32", "SUMS": "*fp32", "qk_scale": "fp32"},
    )
    workspace = {"WS_M": "*fp32", "WS_L": "*fp32", "WS_ACC": "*fp32"}
    lower(
        masked_rows._masked_rows_partial,
        dict(HEAD_DIM=128, ROW_TILE=64, BLOCK_N=64, DOT_PRECISION="tf32"),
        {
            **qkv,
            "ROWS": "*i64",
            "TOKEN_BLOCKS": "*i64",
            "KEEP_BITS": "*u8",
            **workspace,
            "qk_scale": "fp32",
        },
    )
    lower(
        masked_rows._merge_errors,
        dict(HEAD_DIM=128, ROW_TILE=masked_rows._MERGE_ROW_TILE),
        {**workspace, "ERR": "*fp32", "inv_count": "fp32"},
    )
    lower(
        masked_rows._sum_tiles_and_choose,
        dict(BLOCK_P=16, BLOCK_T=16),
        {"PARTIAL": "*fp32", "ERR": "*fp32", "CHOICE": "*i64", "COUNT": "*fp32"},
    )
    lower(
        block_select._rank_rows,
        dict(NK=512, TINY=block_select._TINY, INF_BITS=block_select._INF_BITS),
        {"MASS": "*fp32", "ORDER": "*i64", "CUM": "*fp32"},
    )
    lower(
        block_select._ascending_rows,
        dict(KV=256),
        {"ORDER": "*i64", "COUNTS": "*i32", "OUT": "*i32"},
    )
    count += 6
    count += _lower_kmeans(lower, kmeans)
    count += _lower_8bit(lower, attention_8bit, plain, permuted)
    rejected_text = "was rejected" if rejected else "was NOT rejected"
    print(f"Triton {triton.__version__}: compiled {count} kernel variants for sm_90;", end=" ")
    print(f"the chained comparison {rejected_text}")


def _lower_kmeans(lower, kmeans) -> int:
    """SVG2's k-means iteration at D = 128 in bf16: the assignment at its launch config, and
    the cluster means. Returns how many variants were compiled."""
    config = kmeans.ASSIGN_CONFIGS[128]
    lower(
        kmeans._nearest_centroid,
        dict(HEAD_DIM=128, BLOCK_M=config.block_m, BLOCK_N=config.block_n)
        | {"DOT_PRECISION": "tf32"},
        {"X": "*bf16", "C": "*bf16", "C_NORMS": "*fp32", "LABELS": "*i32"},
        options={"num_warps": config.num_warps, "num_stages": config.num_stages},
    )
    lower(
        kmeans._cluster_means,
        dict(HEAD_DIM=128, ROWS=kmeans._MEANS_ROWS),
        {"X": "*bf16", "ORDER": "*i64", "STARTS": "*i64", "OLD": "*fp32", "NEW": "*fp32"},
    )
    return 2


def _lower_8bit(lower, attention_8bit, plain, permuted) -> int:
    """The 8-bit attention's passes and kernel (plain, and SVG's permuted shared plans), at the
    launcher's D = 128 tiles. Returns how many variants were compiled."""
    config = attention_8bit._GPU_CONFIGS[128]
    lower(
        attention_8bit._kv_stats,
        dict(HEAD_DIM=128, ROWS=attention_8bit._STATS_ROWS),
        {"K": "*bf16", "V": "*bf16", "K_SUM": "*fp32", "V_MAX": "*fp32"},
    )
    quantized = {"Q8": "*i8", "K8": "*i8", "VT8": "*fp8e4nv", "Q_SCALE": "*fp32"}
    quantized |= {"K_SCALE": "*fp32", "V_MAX": "*fp32", "LSE_SHIFT": "*fp32"}
    plan_types = {"PERM": "*i64", "KEY_PERM": "*i64", "PERMUTED": "*u8", "HEAD_PLANS": "*i64"}
    lower(
        attention_8bit._quantize_qkv,
        dict(HEAD_DIM=128, ROWS=attention_8bit.QUANT_ROWS, HAS_PERM=True, HAS_HEAD_PLANS=True)
        | {"EMULATE_E4M3": False},
        {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "K_SUM": "*fp32", **quantized, **plan_types,
         "scale": "fp32"},
    )  # fmt: skip
    base = dict(HEAD_DIM=128, BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_Q=128)
    base |= dict(BLOCK_K=128, ROWS=attention_8bit.QUANT_ROWS, EVEN_K=False, EMULATE_E4M3=False)
    types = {**quantized, "Out": "*bf16", "LSE": "*fp32", "KV_IDX": "*i32", "KV_CNT": "*i32"}
    for variant in (plain, permuted):
        constexprs = {name: value for name, value in variant.items() if not name.startswith("MASS")}
        for name in ("KP", "VP"):
            constexprs.pop(name, None)
        lower(
            attention_8bit._attention_8bit_fwd, base | constexprs, {**types, **plan_types},
            options={"num_warps": config.num_warps, "num_stages": config.num_stages},
        )  # fmt: skip
    return 4


if __name__ == "__main__":
    if sys.argv[1:] == ["--spills"]:
        _profiling_pass_spills()
    else:
        _lower_all()
