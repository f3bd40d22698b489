"""Misspelt names a type checker must report (.ci/typecheck expects one error per line
marked ``# error``): the packages' lazy ``__getattr__`` once made every name Any."""
from __future__ import annotations

import numpy as np

from handgrad import engine, nn

x = engine.Tensor(np.ones(3))
engine.softmaxx(x)                  # error
nn.MLPP([3, 2])                     # error
check = engine.testing.chek_op      # error
