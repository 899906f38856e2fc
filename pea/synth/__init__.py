"""Generators of look-alike data in the real data sets' on-disk layouts."""
