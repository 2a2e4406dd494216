"""medalpy: gradual and stacked training of deep denoising autoencoders.

A MEDAL-style port in NumPy + Numba of Kalmanovich & Chechik, "Gradual training of deep
denoising auto encoders" (ICLR 2015 workshop). Importing this package is cheap: the Numba
kernels are compiled (or loaded from cache) only when a backend is first asked for.
"""

__version__ = "0.1.0"
