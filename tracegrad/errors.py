"""The errors tracegrad raises at users, each naming the user's line and the fix."""


class TracerConversionError(TypeError):
    """A traced value was used where Python needs a concrete one: `if`, `float()`, `math.*`."""


class ImmutableValueError(TypeError):
    """Item assignment on a traced value; traced values are immutable."""


class UnsupportedNumpyFunctionError(TypeError):
    """A NumPy function that tracegrad cannot trace was called on a traced value."""


class ShapeError(ValueError):
    """Shapes that do not fit an operation: broadcasting, matmul, reshape, indexing."""


class IndexingError(ShapeError, IndexError):
    """An index that does not fit a traced value's shape, or that tracegrad cannot trace."""


class IntegerOverflowError(OverflowError):
    """An integer that tracegrad's int64 cannot hold: a uint64 value of 2**63 or more, a huge int literal."""


class NonScalarOutputError(TypeError):
    """`grad` of a function whose output is not a float scalar."""


class LeakedTracerError(RuntimeError):
    """A traced value used after the trace that made it has ended."""


class UnsupportedLeafError(TypeError):
    """A pytree leaf tracegrad cannot take: a string, an object, a complex array."""


class ArgnumsError(ValueError):
    """`argnums` out of range for the call."""


class NonDifferentiableArgumentError(TypeError):
    """`argnums` points at an integer or boolean value."""


class TreeStructureError(ValueError):
    """Pytrees whose structures should match and do not."""


class NonDifferentiableLoopError(TypeError):
    """Reverse mode met a loop whose trip count is known only when it runs (tg.while_loop)."""
