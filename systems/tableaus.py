"""The Butcher tableaus: an alias of :mod:`_dyncore.tableaus` (the shared base)."""
from _dyncore.tableaus import (  # noqa: F401
    DOP853, DOPRI5, METHODS, RK4, RKF23, RKF45, TABLEAUS, Tableau, check_tableau, get_tableau,
    method_tableau,
)
