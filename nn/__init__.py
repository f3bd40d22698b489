"""handgrad.nn: layers, losses, optimizers, data and training on top of ``engine``.

The package is being built (see the project's nn issue); it exists now so that the
distribution installs both import packages.
"""
