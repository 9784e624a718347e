"""Call C functions by address from numba code that numba can cache on disk.

numba calls a ``ctypes`` function by baking its address into the compiled code, so it
refuses to cache such code (the address changes with every process: shared libraries load
at random addresses). Here the address is an ordinary integer argument instead:
:func:`c_function` makes an intrinsic ``call(address, *args)`` that casts the integer to
a function pointer of the declared C signature and calls it. Code that calls it takes the
addresses as arguments (a small int64 table read at run time, see
:func:`vicmae_data.load.native.libwebp.function_table`), never as a global, and caches cleanly:
a second process loads the machine code instead of compiling it.
"""

from __future__ import annotations

import ctypes

from llvmlite import ir
from numba import cfunc, config, types
from numba.core.typing.ctypes_utils import to_ctypes
from numba.core.typing.templates import Signature
from numba.extending import intrinsic


def address_of(function: ctypes._CFuncPtr) -> int:
    """The address of a ``ctypes`` function (valid in this process only)."""
    address = ctypes.cast(function, ctypes.c_void_p).value
    if not address:
        raise OSError(f"no address for {function!r}")
    return int(address)


def symbol_address(library: str | None, name: str) -> int:
    """The address of C function ``name`` in shared ``library`` (a path, or a name
    ``ctypes.CDLL`` finds), or 0 where either is missing: callers fall back then."""
    if not library:
        return 0
    try:
        return address_of(getattr(ctypes.CDLL(library), name))
    except (OSError, AttributeError):
        return 0


def c_function(restype: types.Type, *argtypes: types.Type):
    """An intrinsic ``call(address, *args) -> restype`` for a C function of ``argtypes``.

    Each argument is cast to its declared type (pointers are passed as integers: numpy's
    ``array.ctypes.data``). Example::

        call_abs = c_function(types.int64, types.int64)   # long labs(long)

        @njit(cache=True)
        def f(address, x):
            return call_abs(address, x)
    """

    @intrinsic
    def call(typingctx, address, *args):
        if len(args) == 1 and isinstance(args[0], types.StarArgTuple):
            args = tuple(args[0].types)
        if len(args) != len(argtypes) or not isinstance(address, types.Integer):
            return None  # not this signature: numba reports a typing error
        sig = restype(address, types.StarArgTuple(args))

        def codegen(context, builder, signature, llargs):
            fnty = ir.FunctionType(
                context.get_value_type(restype), [context.get_value_type(t) for t in argtypes]
            )
            pointer = builder.inttoptr(llargs[0], fnty.as_pointer())
            values = [builder.extract_value(llargs[1], i) for i in range(len(args))]
            values = [
                context.cast(builder, v, have, want)
                for v, have, want in zip(values, args, argtypes, strict=True)
            ]
            return builder.call(pointer, values)

        return sig, codegen

    if config.DISABLE_JIT:
        # The kernels run as Python (NUMBA_DISABLE_JIT=1: `make mutate` mutates them that
        # way), and an intrinsic cannot be called from Python: the same call through ctypes.
        proto = _prototype(restype, argtypes)

        def call_from_python(address, *args):
            plain = [a.item() if hasattr(a, "item") else a for a in args]  # numpy scalars
            return proto(int(address))(*plain)

        return call_from_python
    return call


def _prototype(restype: types.Type, argtypes) -> type:
    """The ctypes function type of a C signature given as numba types."""
    return ctypes.CFUNCTYPE(to_ctypes(restype), *map(to_ctypes, argtypes))


class _PythonEntry:
    """A Python function behind a C function pointer (a ctypes callback): ``.address``."""

    def __init__(self, function, proto: type) -> None:
        self._callback = proto(function)  # kept alive as long as the address is handed out
        self.address = address_of(self._callback)


def c_entry(signature: Signature):
    """numba's ``cfunc(signature, cache=True)``: a C entry point other kernels call by address.

    With ``NUMBA_DISABLE_JIT=1`` (``make mutate`` runs the kernels as Python) numba cannot
    compile a ``cfunc`` whose body calls kernels that are now plain Python, so the entry is a
    ctypes callback running the body as Python instead: callers still get an ``.address``,
    and the body runs as written (a mutant in it is tested, not read from numba's cache).
    The body's ``carray(pointer, n)`` works on the ctypes pointers the callback receives.
    """
    if not config.DISABLE_JIT:
        return cfunc(signature, cache=True)
    proto = _prototype(signature.return_type, signature.args)
    return lambda function: _PythonEntry(function, proto)
