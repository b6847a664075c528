"""The C library, loaded once for the few calls Python's os module lacks.

``use_errno``: a failing call's errno is kept for ``ctypes.get_errno()``.
Callers look functions up with ``getattr(libc, name, None)``, since another C
library (musl) may lack one.
"""

from __future__ import annotations

import ctypes

libc = ctypes.CDLL(None, use_errno=True)
