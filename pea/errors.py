"""Errors the command lines report as one line: bad user input (files, config keys, values,
shapes) and runs that cannot go on (a diverging training, a full disk)."""


class PEAInputError(ValueError):
    """Bad input: the message names the file, key or shape at fault.

    The command line prints it as one line and exits with code 2.
    """


class PEARunError(RuntimeError):
    """A run that cannot go on (non-finite loss, an unwritable file): the message says where
    and why. The command line prints it as one line and exits with code 1."""
