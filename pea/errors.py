"""Errors raised for bad user input (files, config keys, shapes)."""


class PEAInputError(ValueError):
    """Bad input: the message names the file, key or shape at fault.

    The command line prints it as one line and exits with code 2.
    """
