"""Atomic loads, stores and fences on ``uint64`` array elements, for numba kernels.

numba has no memory-model primitives of its own, so these emit LLVM's atomic
instructions through :func:`numba.extending.intrinsic`. LLVM lowers them per
target: on x86-64 an acquire load is a plain ``mov`` (TSO) and a sequentially
consistent store an ``xchg``; on AArch64 they become ``ldar``/``stlr`` and
``dmb`` barriers. Plain array loads inside a loop may be hoisted out of it by
the optimiser; atomic loads never are, which is what makes spinning on a word
another process writes correct.

Usage inside ``@njit`` code only: ``load_relaxed/load_acquire/load_seq_cst(words, i)``,
``store_relaxed/store_release/store_seq_cst(words, i, v)``, ``fetch_add(words, i, v)``,
``exchange(words, i, v)``, ``compare_exchange(words, i, old, new)``, ``fence_acquire()``,
``fence_release()``, ``fence_seq_cst()`` and the spin hint ``cpu_relax()``.
"""

from __future__ import annotations

import platform
from typing import Any

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


def _is_u64_array(arr: Any) -> bool:
    return isinstance(arr, types.Array) and arr.dtype == types.uint64 and arr.ndim == 1


def _pointer(context: Any, builder: Any, aryty: Any, ary: Any, idx: Any) -> Any:
    array = context.make_array(aryty)(context, builder, ary)
    return cgutils.get_item_pointer(context, builder, aryty, array, [idx], wraparound=False)  # type: ignore[no-untyped-call]


def _make_load(ordering: str) -> Any:
    def typer(typingctx: Any, arr: Any, idx: Any) -> Any:
        if not (_is_u64_array(arr) and isinstance(idx, types.Integer)):
            return None

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            ptr = _pointer(context, builder, signature.args[0], args[0], args[1])
            return builder.load_atomic(ptr, ordering=ordering, align=8)

        return types.uint64(arr, idx), codegen

    typer.__name__ = f"load_{ordering}"
    return intrinsic(typer)


def _make_store(ordering: str) -> Any:
    def typer(typingctx: Any, arr: Any, idx: Any, val: Any) -> Any:
        if not (_is_u64_array(arr) and isinstance(idx, types.Integer) and isinstance(val, types.Integer)):
            return None

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            ptr = _pointer(context, builder, signature.args[0], args[0], args[1])
            value = context.cast(builder, args[2], signature.args[2], types.uint64)
            builder.store_atomic(value, ptr, ordering=ordering, align=8)
            return context.get_dummy_value()

        return types.void(arr, idx, val), codegen

    typer.__name__ = f"store_{ordering}"
    return intrinsic(typer)


def _make_fence(ordering: str) -> Any:
    def typer(typingctx: Any) -> Any:
        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            builder.fence(ordering)
            return context.get_dummy_value()

        return types.void(), codegen

    typer.__name__ = f"fence_{ordering}"
    return intrinsic(typer)


def _make_rmw(op: str) -> Any:
    """A sequentially consistent read-modify-write (``add``, ``xchg``) returning the old value."""

    def typer(typingctx: Any, arr: Any, idx: Any, val: Any) -> Any:
        if not (_is_u64_array(arr) and isinstance(idx, types.Integer) and isinstance(val, types.Integer)):
            return None

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            ptr = _pointer(context, builder, signature.args[0], args[0], args[1])
            value = context.cast(builder, args[2], signature.args[2], types.uint64)
            return builder.atomic_rmw(op, ptr, value, "seq_cst")

        return types.uint64(arr, idx, val), codegen

    typer.__name__ = f"rmw_{op}"
    return intrinsic(typer)


@intrinsic
def _compare_exchange(typingctx: Any, arr: Any, idx: Any, expected: Any, new: Any) -> Any:
    """If ``arr[idx] == expected``, store ``new`` (sequentially consistent); True if it did."""
    ok = _is_u64_array(arr) and all(isinstance(t, types.Integer) for t in (idx, expected, new))
    if not ok:
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        ptr = _pointer(context, builder, signature.args[0], args[0], args[1])
        cmp = context.cast(builder, args[2], signature.args[2], types.uint64)
        val = context.cast(builder, args[3], signature.args[3], types.uint64)
        pair = builder.cmpxchg(ptr, cmp, val, "seq_cst", "seq_cst")
        return builder.extract_value(pair, 1)

    return types.boolean(arr, idx, expected, new), codegen


_MACHINE = platform.machine().lower()


def _declare(builder: Any, fnty: Any, name: str) -> Any:
    return cgutils.get_or_insert_function(builder.module, fnty, name)  # type: ignore[no-untyped-call]


@intrinsic
def _cpu_relax(typingctx: Any) -> Any:
    """A spin-loop hint: x86 ``pause``, AArch64 ``yield``; nothing elsewhere."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        if _MACHINE in ("x86_64", "amd64", "i686", "i386"):
            builder.call(_declare(builder, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause"), [])
        elif _MACHINE in ("aarch64", "arm64"):
            fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(32)])
            builder.call(_declare(builder, fnty, "llvm.aarch64.hint"), [ir.Constant(ir.IntType(32), 1)])
        return context.get_dummy_value()

    return types.void(), codegen


# Typed as Any: they are only ever called from numba code, where numba types them.
fetch_add: Any = _make_rmw("add")  # arr[idx] += val; returns the old value
exchange: Any = _make_rmw("xchg")  # arr[idx] = val; returns the old value
compare_exchange: Any = _compare_exchange
cpu_relax: Any = _cpu_relax
load_relaxed: Any = _make_load("monotonic")
load_acquire: Any = _make_load("acquire")
load_seq_cst: Any = _make_load("seq_cst")
store_relaxed: Any = _make_store("monotonic")
store_release: Any = _make_store("release")
store_seq_cst: Any = _make_store("seq_cst")
fence_acquire: Any = _make_fence("acquire")
fence_release: Any = _make_fence("release")
fence_seq_cst: Any = _make_fence("seq_cst")
