"""``python -m onnxscope`` is the ``onnxscope`` command."""

import sys

from onnxscope.cli.main import main

sys.exit(main())
