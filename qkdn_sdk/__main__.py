"""``python -m qkdn_sdk``: the ``qkdn`` command line."""

from qkdn_sdk.cli import main

main()
