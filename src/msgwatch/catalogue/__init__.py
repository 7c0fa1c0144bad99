"""The service catalogue: data files describing each service's functions and endpoints."""

from msgwatch.catalogue.loader import (
    Catalogue,
    CatalogueError,
    FunctionTargets,
    Service,
    default_catalogue_path,
    load_catalogue,
)
from msgwatch.catalogue.schema import FUNCTIONS, Endpoint

__all__ = [
    "FUNCTIONS",
    "Catalogue",
    "CatalogueError",
    "Endpoint",
    "FunctionTargets",
    "Service",
    "default_catalogue_path",
    "load_catalogue",
]
