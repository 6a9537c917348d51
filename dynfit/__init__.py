"""dynfit: Neural ODE surrogates of dynamical systems, trained with solvers whose inside the loop can see."""
__version__ = "0.1.0"
