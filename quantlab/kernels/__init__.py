"""Fast numba kernels, one module per family, with the same function names as the numpy references in
``quantlab.formats`` and bit-identical output. Rows are split across threads with ``prange``."""
