"""Plain NumPy/SciPy reference implementations of the signal kernels.

They are the ground truth the Numba kernels are tested against (each test states its
tolerance). They favour clarity over speed and live with the tests: nothing shipped imports
them (``emofuse bench signals`` times the kernels against library baselines instead).
"""
