"""Shared settings. Models are built on the fly or read from fixtures/; nothing here touches the network.

Skips are listed with their reasons in tests/SKIPPED.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
