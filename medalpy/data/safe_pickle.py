"""Load the pickled CIFAR batches without executing code from the file.

The CIFAR "python version" batches are Python 2 pickles (protocol 2) of a dict whose values
are byte strings, lists of ints or byte strings, and one uint8 NumPy array. A pickle may name
any importable callable and have the unpickler call it; :class:`SafeUnpickler` therefore
admits no real global at all. The only names it resolves are the three a pickled NumPy array
needs (``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``), and those
resolve to inert stand-ins defined here that build the array with ``np.frombuffer`` from the
raw bytes, for a short list of plain numeric dtypes. Any other global (``os.system``,
``builtins.eval``, ``subprocess.Popen``, ...) is refused with :class:`DataError` before it
can be called.
"""

import io
import pickle

import numpy as np

from medalpy.errors import DataError

_NUMERIC_DTYPES = frozenset(
    ["u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f4", "f8", "b1"]
)


class _DtypeStub:
    """Inert stand-in for ``numpy.dtype(name, align, copy)`` plus its ``__setstate__``."""

    def __init__(self, name, align=False, copy=False):
        if isinstance(name, bytes):
            name = name.decode("ascii", "replace")
        if not isinstance(name, str) or name not in _NUMERIC_DTYPES:
            raise _Refused(f"array dtype {name!r} is not a plain numeric type")
        self.name = name
        self.byteorder = "|"

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) < 2:
            raise _Refused("malformed dtype state")
        order = state[1]
        if isinstance(order, bytes):
            order = order.decode("ascii", "replace")
        if order not in ("<", ">", "|", "="):
            raise _Refused(f"malformed dtype byte order {order!r}")
        self.byteorder = order

    def numpy(self):
        order = "=" if self.byteorder == "|" else self.byteorder
        return np.dtype(self.name).newbyteorder(order)


class _ArrayStub:
    """Inert stand-in for the object ``_reconstruct`` returns; ``__setstate__`` fills it."""

    def __init__(self):
        self.array = None

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) != 5:
            raise _Refused("malformed ndarray state")
        _version, shape, dtype, fortran, raw = state
        if not isinstance(dtype, _DtypeStub):
            raise _Refused("ndarray state without a dtype")
        if not isinstance(shape, tuple) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
        ):
            raise _Refused(f"malformed ndarray shape {shape!r}")
        if isinstance(raw, str):  # Python 2 str loaded as text (encoding='latin1')
            raw = raw.encode("latin1")
        if not isinstance(raw, (bytes, bytearray)):
            raise _Refused("ndarray data is not a byte string")
        dt = dtype.numpy()
        n = 1
        for d in shape:
            n *= d
        if n * dt.itemsize != len(raw):
            raise _Refused(
                f"ndarray of shape {shape} and dtype {dt.name} needs {n * dt.itemsize} bytes, "
                f"the pickle holds {len(raw)}"
            )
        arr = np.frombuffer(bytes(raw), dtype=dt)
        self.array = arr.reshape(shape, order="F" if fortran else "C")


class _Refused(Exception):
    """Internal: raised inside the unpickler, turned into DataError by :func:`safe_load`."""


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves no global but the inert NumPy stand-ins above.

    The stand-ins are fresh objects for each unpickler, so a hostile pickle that sets
    attributes on what ``find_class`` handed it (opcode BUILD) changes nothing outside this
    one load.
    """

    def __init__(self, file, **kwargs):
        super().__init__(file, **kwargs)
        ndarray = object()  # no __dict__: BUILD on it fails

        def reconstruct(cls, shape, typecode):
            if cls is not ndarray:
                raise _Refused("_reconstruct called for a type other than numpy.ndarray")
            return _ArrayStub()

        def dtype(*args):
            return _DtypeStub(*args)

        self._allowed = {
            ("numpy.core.multiarray", "_reconstruct"): reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): reconstruct,
            ("numpy", "ndarray"): ndarray,
            ("numpy", "dtype"): dtype,
        }

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _Refused(
                f"refused to load: the pickle asks for the global {module}.{name}, "
                "which a CIFAR batch never contains (possible code-executing payload)"
            ) from None

    def persistent_load(self, pid):
        raise _Refused("refused to load: the pickle uses persistent ids")


def _materialise(obj, depth=0):
    """Replace every array stand-in by its array; refuse anything that is not plain data."""
    if depth > 50:
        raise _Refused("pickle nests deeper than a CIFAR batch ever does")
    if isinstance(obj, _ArrayStub):
        if obj.array is None:
            raise _Refused("ndarray without data")
        return obj.array
    if isinstance(obj, dict):
        return {_materialise(k, depth + 1): _materialise(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_materialise(v, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialise(v, depth + 1) for v in obj)
    if obj is None or isinstance(obj, (bool, int, float, str, bytes, bytearray)):
        return obj
    raise _Refused(f"unexpected object of type {type(obj).__name__} in the pickle")


def safe_loads(raw, path="<bytes>"):
    """Unpickle ``raw`` (a CIFAR batch) with :class:`SafeUnpickler`.

    Python 2 ``str`` objects come back as ``bytes`` (``encoding="bytes"``), as in the
    CIFAR authors' own loading recipe.

    Raises
    ------
    DataError
        Naming ``path``, for a refused global or any malformed or truncated pickle.
    """
    try:
        obj = SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
        return _materialise(obj)
    except _Refused as exc:
        raise DataError(f"{path}: {exc}") from None
    except RecursionError:
        raise DataError(f"{path}: pickle nests too deeply") from None
    except MemoryError:
        raise DataError(f"{path}: pickle asks for more memory than is available") from None
    except EOFError:
        raise DataError(f"{path}: truncated pickle") from None
    except Exception as exc:  # noqa: BLE001 - the unpickler raises many types on bad bytes
        raise DataError(f"{path}: not a valid pickle ({type(exc).__name__}: {exc})") from None
