"""_dyncore: the small base under both packages, with no numba and no torch.

- :mod:`_dyncore.checks`: argument checks (one signature, one rule for exceptions);
- :mod:`_dyncore.tableaus`: Butcher tableaus as checked plain arrays;
- :mod:`_dyncore.status`: the :class:`Status` codes and the step-control defaults;
- :mod:`_dyncore.stats`: :class:`Stats`, the per-trajectory counts of a solve.

``systems`` (numba) and ``dynfit.solvers`` (torch) both import from here, so
``import dynfit.solvers`` works without numba. Private: the public names stay
``systems.checks``, ``systems.tableaus``, ``systems.Status``, ``systems.Stats``
(aliases of these modules' names) and their dynfit counterparts.
"""
