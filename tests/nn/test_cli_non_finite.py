"""handgrad train never writes a non-finite model: an update that overflows (SGD with lr
1e300) stops the run with an error, and the model.npz it leaves holds the last good weights."""
from __future__ import annotations

import numpy as np

from handgrad import nn
from handgrad.nn import cli


def test_an_overflowing_learning_rate_is_an_error_and_model_npz_stays_finite(tmp_path, capsys):
    out = tmp_path / "run"
    # Full batch, one epoch: the one update overflows while its loss and gradients are
    # finite; the run used to end "trained" with an all-inf model.npz.
    status = cli.main(["train", "--dataset", "moons", "--epochs", "1", "--optimizer", "sgd",
                       "--lr", "1e300", "--out", str(out), "--quiet"])
    assert status == 2
    assert "(after the optimizer's update) became" in capsys.readouterr().err
    model = nn.load(out / "model.npz", check_finite=True)
    assert all(np.isfinite(v).all() for v in model.state_dict().values())
