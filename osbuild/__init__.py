"""osbuild: build operating-system images from JSON manifests.

This package must stay importable by a stage inside the sandbox, under the build
root's Python: importing it pulls in nothing beyond the standard library.
"""

__version__ = "0.1.0"
