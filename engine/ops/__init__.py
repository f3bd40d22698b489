"""Every op handgrad knows, one family a module. Importing a family registers its ops:
each becomes ``engine.<name>`` and an entry of ``engine.REGISTRY``."""
from . import activation, elementwise, linalg, loss, reduce, shape  # noqa: F401
