"""Decoding once: the preprocessing cache, its index and files, and the record of a finished
setup."""
