"""Independent float64 NumPy transcriptions of published algorithms, for the tests.

Nothing here imports lamb_optax: these are what the package is checked against.
"""
