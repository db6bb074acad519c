"""The ``onnxscope`` command line: one module per command, each parsing arguments and calling the library."""
