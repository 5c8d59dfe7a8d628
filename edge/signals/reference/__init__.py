"""Plain NumPy/SciPy reference implementations of the signal kernels.

They are the ground truth the Numba kernels are tested against (each test states its
tolerance) and the baselines ``emofuse bench signals`` measures the kernels against. They
favour clarity over speed and are never used on the device's hot path.
"""
