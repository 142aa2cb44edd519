"""Built-in data sets: ``images`` (digits, MNIST IDX files, a user's npz) and ``text`` (names, a user's text
file).

Examples of inputs for the method, never imported by it. Every file read here is untrusted
(``sgsc_export._io``).
"""
