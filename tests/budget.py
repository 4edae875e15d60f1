"""Memory and CPU budgets for the hardening tests, measured inside a child process.

``within(extra)`` lowers the soft RLIMIT_AS of *this* process to its current address-space size + ``extra``
bytes for the duration of a ``with`` block, then restores it: any allocation (numpy, Python, mmap) beyond
that fails with MemoryError / ENOMEM inside the block. Run it in a child process (the tests do), never in
the pytest process itself. ``cpu()`` is the user + system CPU time of the process: a budget in CPU seconds
does not depend on how busy the machine is, a wall-clock one would.
"""

from __future__ import annotations

import contextlib
import resource

MB = 1 << 20


def vm_size() -> int:
    """The process's current address-space size in bytes (VmSize of /proc/self/status)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


@contextlib.contextmanager
def within(extra: int):
    """Allow at most ``extra`` more bytes of address space inside the block."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (vm_size() + int(extra), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
