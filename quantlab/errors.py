"""quantlab's exceptions: one small hierarchy, every message says what was expected and what was found.

All of them derive from :class:`QuantlabError`; those about bad values also derive from ``ValueError`` so
``except ValueError`` keeps working for callers that do not know quantlab.
"""


class QuantlabError(Exception):
    """Base class of every error quantlab raises on purpose."""


class FormatError(QuantlabError, ValueError):
    """A format name/id is unknown, removed, or not implemented; or data does not fit a format."""


class RemovedTypeError(FormatError):
    """A ggml type id that once existed but was removed from the GGUF format (4, 5, 31-33, 36-38)."""


class ShapeError(FormatError):
    """An array's shape or dtype does not fit the format (row length vs block size, buffer length...)."""


class NonFiniteError(FormatError):
    """NaN or infinity in weights that a quantized format cannot represent."""


class ImatrixError(FormatError):
    """An importance matrix of the wrong length, dtype or with negative / non-finite entries."""


class ImatrixRequired(ImatrixError):
    """The format cannot be quantized without an importance matrix (IQ1_S, IQ2_XXS, IQ2_XS)."""


class QuantizationError(FormatError):
    """A quantizer met an input it cannot handle (where ggml itself would abort the process)."""


class ArgumentError(QuantlabError, ValueError):
    """An API argument of the wrong type or out of range (``threads=2.5``, ``threads=0``, a block index
    that is not an integer...)."""


class QuantizationWarning(UserWarning):
    """Quantizing gave blocks that do not represent the weights: a row's magnitude is beyond what the
    format's scale field (fp16 in most formats) can hold, so its blocks decode to inf/NaN or to zeros.
    The bytes are the ones ggml writes for the same input (kept, byte for byte); the message names the
    format, the first such row, its largest magnitude and the format's limit (``Format.max_abs``)."""


class GGUFError(QuantlabError, ValueError):
    """A GGUF file is malformed, truncated or hostile; the message names the byte offset."""


class DataMissing(QuantlabError, FileNotFoundError):
    """A real model or data file is not installed; the message says how to install it."""


class ModelError(QuantlabError, ValueError):
    """A model cannot be run: unsupported architecture, missing tensor, mismatched vocabulary..."""


class OracleMissing(QuantlabError, RuntimeError):
    """The ggml library used as a peer/oracle could not be found."""
