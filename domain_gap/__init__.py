"""domain-gap: explain, in input-level terms, why a segmentation model drops on a new domain."""

import os

# code_loader phones home on import unless told not to; offline that stalls for seconds.
os.environ.setdefault("TL_DISABLE_ANALYTICS", "true")

__version__ = "0.1.0"
