"""Fast numba kernels, one module per family, with the same function names as the numpy references in
``quantlab.formats`` and bit-identical output. Each kernel takes a range of rows; ``_rows.run_rows`` spreads the ranges over Python threads."""
