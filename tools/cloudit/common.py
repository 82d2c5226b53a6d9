"""Paths and small helpers shared by CloudIt's modules."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
CROSS_FILE = os.path.join(ROOT, "meson", "x86_64-toro-kernel.ini")
NATIVE_FILE = os.path.join(ROOT, "meson", "native.ini")


class CloudItError(Exception):
    """A failure with a message that says what went wrong and how to fix it; exit_code is CloudIt's status."""

    def __init__(self, message, exit_code=2):
        super().__init__(message)
        self.exit_code = exit_code


def say(msg):
    print(f"cloudit: {msg}", file=sys.stderr, flush=True)
