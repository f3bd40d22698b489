"""Training throughput: Fashion-MNIST, MLP 784-256-128-10 (ReLU), batch 128, SGD momentum
0.9, float32. One epoch per variant, interleaved, several rounds; medians and ratios against
the hand-written numpy MLP, and against the epoch's matrix-product floor (the same GEMMs
alone, into preallocated outputs, measured in the same run). Then 5 epochs of each with
the test accuracy.

    python benchmarks/train_throughput.py            # the full run (a few minutes)
    python benchmarks/train_throughput.py --smoke    # seconds, for CI
    python benchmarks/train_throughput.py --fit-vs-bare-only --repeats 10
        # only fit_vs_bare, merged into the results JSON (its table rows kept)

Variants: numpy by hand; handgrad eager; handgrad compiled (nn.compile_step: captured once
per batch shape, replayed); PyTorch eager and torch.compile when torch is installed; JAX
jit when jax is installed (each skipped with a note otherwise).

All variants start from the same weights and see the batches in the same order. handgrad
eager and compiled agree bit for bit always; handgrad and the numpy MLP agree bit for bit
while every batch has 128 examples (tests/test_benchmarks.py checks it); the last, smaller
batch (60000 = 468 x 128 + 96) divides by 96, which the two round differently, so after
it their trajectories drift apart by float32 rounding.

Then the price of ``fit(compile=True)`` against a bare loop of the same compiled step
(``fit_vs_bare``). The bare loop is ``nn.compile_step(model, loss, opt)`` as a user would
write it, called on fit's batches (same order, ``x[idx]``): the step's own checks on
(``check_finite=True``, the default: the loss and every gradient checked finite before
any update, as ``ReplayStep`` does them) and the optimizer's ``check_finite`` at its
default, off. ``fit`` adds what makes its guarantee complete, the optimizer's check (an
update that would make a weight NaN or Inf is refused and every weight keeps its last
good value: mostly proven finite from bounds, nn/update_bounds.py, else a copy of the
parameters and a dot product of each), and its bookkeeping (loss and accuracy tally,
History, callbacks). Both from the same weights, interleaved rounds (the order
alternating), epoch 1 (with the captures) and the later epochs reported apart, two ways:
the ratio of each variant's minimum time, and the median over rounds of the ratio within
a round (the variants ran seconds apart, so the machine's slow drifts cancel); and, per
step, the 10th, 25th and 50th percentiles of the step times of the later epochs pooled
over the rounds (a slow spell of a shared machine spoils the steps it hits, not the low
quantiles of thousands of steps);
``bare+update check`` is the bare loop with the optimizer's check on, to show the two
parts of the difference.

Every loop gets its batch the same way, ``x[idx]``. In the throughput table the compiled
step is built with ``check_finite=False`` because no other loop there checks for NaN.
"""
from __future__ import annotations

import json
import time
import timeit
from typing import Any, Callable

import numpy as np
from common import RESULTS, fashion_mnist, interleaved, machine, median, parser, print_notes, save, table, torch_or_none
from numpy_mlp import NumpyMLP  # noqa: E402

from handgrad import (
    engine,  # noqa: E402
    nn,  # noqa: E402
)

SIZES = [784, 256, 128, 10]
LR, MOMENTUM, BATCH = 0.05, 0.9, 128


def batch_order(n: int, epoch: int) -> list[np.ndarray]:
    perm = np.random.default_rng(epoch).permutation(n)
    return [perm[i:i + BATCH] for i in range(0, n, BATCH)]


def handgrad_model(reference: NumpyMLP) -> tuple[nn.MLP, nn.optim.SGD]:
    model = nn.MLP(SIZES, activation="relu", seed=0)
    for layer, W, b in zip(model.layers[::2], reference.W, reference.b):
        layer.weight.data[...] = W
        layer.bias.data[...] = b
    return model, nn.optim.SGD(model, lr=LR, momentum=MOMENTUM)


def handgrad_epoch(model: nn.MLP, opt: nn.optim.SGD, x: np.ndarray, y: np.ndarray, epoch: int) -> float:
    loss_fn = nn.CrossEntropyLoss()
    loss = None
    for idx in batch_order(len(x), epoch):
        loss = loss_fn(model(engine.Tensor(x[idx], copy=False)), y[idx])   # a fresh batch: no copy
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss.item())


def compiled_epoch(step: nn.CompiledStep, x: np.ndarray, y: np.ndarray, epoch: int) -> float:
    loss = 0.0
    for idx in batch_order(len(x), epoch):
        loss = step(x[idx], y[idx])
    return loss


def numpy_epoch(model: NumpyMLP, x: np.ndarray, y: np.ndarray, epoch: int) -> float:
    loss = 0.0
    for idx in batch_order(len(x), epoch):
        loss = model.step(x[idx], y[idx], LR, MOMENTUM)
    return loss


def gemm_floor_epoch(model: NumpyMLP, x: np.ndarray, epoch: int) -> None:
    """Only the matrix products of an epoch (3 forward, 5 backward per step: the input
    layer needs no input gradient), into preallocated outputs: what no loop can beat."""
    W = model.W
    out: dict[tuple[int, int], np.ndarray] = {}

    def mm(a, b):
        key = (a.shape[0], b.shape[1])
        if key not in out:
            out[key] = np.empty(key, np.float32)
        return np.matmul(a, b, out=out[key])
    for idx in batch_order(len(x), epoch):
        a0 = x[idx]
        a1 = mm(a0, W[0]).copy()
        a2 = mm(a1, W[1]).copy()
        d3 = mm(a2, W[2]).copy()
        mm(a2.T, d3)
        d2 = mm(d3, W[2].T).copy()
        mm(a1.T, d2)
        d1 = mm(d2, W[1].T).copy()
        mm(a0.T, d1)


def torch_setup(torch, reference: NumpyMLP):
    layers = []
    for i, (W, b) in enumerate(zip(reference.W, reference.b)):
        lin = torch.nn.Linear(*W.shape)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W.T.copy()))
            lin.bias.copy_(torch.from_numpy(b.copy()))
        layers.append(lin)
        if i < len(reference.W) - 1:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    return model, torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)


def torch_epoch(torch, model, opt, x: np.ndarray, y: np.ndarray, epoch: int, forward=None) -> float:
    loss_fn = torch.nn.CrossEntropyLoss()
    forward = forward or model
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    loss = None
    for idx in batch_order(len(x), epoch):
        i = torch.from_numpy(idx)
        loss = loss_fn(forward(xt[i]), yt[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss.item())


def torch_compiled(torch, reference: NumpyMLP, x: np.ndarray, y: np.ndarray):
    """torch.compile of the model, or (None, reason) when it cannot compile here."""
    try:
        model, opt = torch_setup(torch, reference)                  # a trial on a copy
        torch_epoch(torch, model, opt, x[:2 * BATCH], y[:2 * BATCH], 0, torch.compile(model))
        model, opt = torch_setup(torch, reference)
        return (model, opt, torch.compile(model)), ""
    except Exception as e:  # noqa: BLE001 - no C compiler, unsupported platform, ...
        return None, f"torch.compile unavailable here ({type(e).__name__}: {str(e)[:80]})"


def jax_or_none() -> Any:
    try:
        import jax
    except ImportError:
        return None
    jax.config.update("jax_platforms", "cpu")
    return jax


def jax_setup(jax, reference: NumpyMLP):
    """A jitted SGD-with-momentum step on (params, velocities) and a predict function."""
    jnp = jax.numpy

    def loss_fn(params, xb, yb):
        logp = jax.nn.log_softmax(_jax_logits(jax, params, xb))
        return -jnp.mean(jnp.take_along_axis(logp, yb[:, None], axis=1))

    @jax.jit
    def step(params, vel, xb, yb):
        loss, grads = jax.value_and_grad(loss_fn)(params, xb, yb)
        vel = jax.tree_util.tree_map(lambda v, g: MOMENTUM * v + g, vel, grads)
        params = jax.tree_util.tree_map(lambda p, v: p - LR * v, params, vel)
        return params, vel, loss

    params = [(jnp.asarray(W), jnp.asarray(b)) for W, b in zip(reference.W, reference.b)]
    vel = jax.tree_util.tree_map(jnp.zeros_like, params)
    return {"params": params, "vel": vel, "step": step,
            "predict": jax.jit(lambda params, xb: _jax_logits(jax, params, xb))}


def _jax_logits(jax, params, xb):
    a = xb
    for i, (W, b) in enumerate(params):
        a = a @ W + b
        if i < len(params) - 1:
            a = jax.nn.relu(a)
    return a


def jax_epoch(state: dict[str, Any], x: np.ndarray, y: np.ndarray, epoch: int) -> float:
    loss = None
    for idx in batch_order(len(x), epoch):
        state["params"], state["vel"], loss = state["step"](state["params"], state["vel"],
                                                            x[idx], y[idx])
    return float(loss)


class _EpochClock(nn.callbacks.Callback):
    """The wall time of each epoch of a fit, from its start to the next one's (the last:
    to the end of training): the steps, the record and the callbacks; and of each step of
    the later epochs, from the end of the one before (the step and fit's bookkeeping)."""

    def __init__(self) -> None:
        self.marks: list[float] = []
        self.steps: list[float] = []
        self.last = 0.0

    def on_epoch_begin(self, epoch: int) -> None:
        self.marks.append(time.perf_counter())
        self.last = self.marks[-1]

    def on_step_end(self, epoch: int, step: int, loss: float, scores: np.ndarray,
                    targets: Any) -> None:
        now = time.perf_counter()
        if epoch > 1:
            self.steps.append(now - self.last)
        self.last = now

    def on_train_end(self) -> None:
        self.marks.append(time.perf_counter())

    def seconds(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def fit_vs_bare(x: np.ndarray, y: np.ndarray, repeats: int, epochs: int) -> dict[str, Any]:
    """Per-epoch seconds of fit(compile=True) and of bare loops of the same compiled step
    (the module docstring says what each checks), fresh models each round."""
    def model_opt() -> tuple[nn.MLP, nn.optim.SGD]:
        model = nn.MLP(SIZES, activation="relu", seed=0)
        return model, nn.optim.SGD(model, lr=LR, momentum=MOMENTUM)

    step_times: dict[str, list[float]] = {"bare": [], "bare+update check": [], "fit": []}

    def bare(update_check: bool) -> list[float]:
        model, opt = model_opt()
        opt.check_finite = update_check
        step = nn.compile_step(model, nn.CrossEntropyLoss(), opt)      # its checks on
        steps = step_times["bare+update check" if update_check else "bare"]
        out = []
        for epoch in range(1, epochs + 1):
            start = last = time.perf_counter()
            order = np.random.default_rng([0, epoch]).permutation(len(x))   # fit's batches
            for i in range(0, len(x), BATCH):
                idx = order[i:i + BATCH]
                step(x[idx], y[idx])
                now = time.perf_counter()
                if epoch > 1:
                    steps.append(now - last)
                last = now
            out.append(time.perf_counter() - start)
        return out

    def fitted() -> list[float]:
        model, opt = model_opt()
        clock = _EpochClock()
        nn.fit(model, nn.CrossEntropyLoss(), opt, (x, y), epochs=epochs, batch_size=BATCH,
               verbose=0, compile=True, callbacks=[clock])
        step_times["fit"] += clock.steps
        return clock.seconds()

    variants: dict[str, Callable[[], list[float]]] = {
        "bare": lambda: bare(False), "bare+update check": lambda: bare(True), "fit": fitted}
    runs: dict[str, list[list[float]]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            runs[name].append(variants[name]())
    first = {k: min(run[0] for run in v) for k, v in runs.items()}

    def paired(name: str, epochs_: slice) -> float:
        """The median over rounds (and epochs) of this variant's time over the bare
        loop's in the same round: the two ran seconds apart, so slow drifts of the
        machine cancel, where the minima of each compare different moments."""
        return median([a / b for ra, rb in zip(runs[name], runs["bare"], strict=True)
                       for a, b in zip(ra[epochs_], rb[epochs_], strict=True)])

    later = {k: min(t for run in v for t in run[1:]) for k, v in runs.items()} if epochs > 1 else {}
    # Per step, pooled over the later epochs of every round: a slow spell of the machine
    # spoils the steps it hits, not a whole epoch, so the low quantiles stay put.
    quantiles = {k: {f"p{q}": float(np.percentile(v, q)) * 1e6 for q in (10, 25, 50)}
                 for k, v in step_times.items() if v}
    steps = -(-len(x) // BATCH)
    additions = fit_additions(x, y, min(t for run in runs["bare"] for t in run) / steps)
    return {"epochs": epochs, "repeats": repeats, "runs": runs, "fit additions": additions,
            "epoch 1 s (min)": first, "later epochs s (min)": later,
            "fit/bare epoch 1": first["fit"] / first["bare"],
            "fit/bare later epochs": later["fit"] / later["bare"] if later else None,
            "bare+update check/bare epoch 1": first["bare+update check"] / first["bare"],
            "bare+update check/bare later epochs":
                later["bare+update check"] / later["bare"] if later else None,
            "per-step µs, later epochs": quantiles,
            **{f"{k}/bare per step, {q}": quantiles[k][q] / quantiles["bare"][q]
               for k in ("fit", "bare+update check") if k in quantiles for q in ("p10", "p25", "p50")},
            "fit/bare epoch 1, median of paired rounds": paired("fit", slice(0, 1)),
            "fit/bare later epochs, median of paired rounds":
                paired("fit", slice(1, None)) if epochs > 1 else None,
            "bare+update check/bare epoch 1, median of paired rounds":
                paired("bare+update check", slice(0, 1)),
            "bare+update check/bare later epochs, median of paired rounds":
                paired("bare+update check", slice(1, None)) if epochs > 1 else None}


def fit_additions(x: np.ndarray, y: np.ndarray, bare_step_s: float) -> dict[str, float]:
    """What fit adds to a bare compiled step, each part timed alone in µs per step (the
    minimum of many repeats, which a busy machine inflates far less than whole epochs):
    the optimizer's update check (mostly proven finite: the checked-or-proven update minus
    the plain one) and fit's per-step bookkeeping (its epoch loop around a step that
    returns at once: the loss and accuracy tally, History, callbacks). Their sum over the
    bare loop's step time (``bare_step_s``) estimates fit/bare without the noise."""
    from handgrad.nn.history import History
    from handgrad.nn.step import gradient_bounds
    from handgrad.nn.train import _Interrupts, _Tally, _train_epoch, _Where  # fit's own loop

    model = nn.MLP(SIZES, activation="relu", seed=0)
    opt = nn.optim.SGD(model, lr=0.0, momentum=MOMENTUM)    # lr 0: the same work, fixed weights
    step = nn.compile_step(model, nn.CrossEntropyLoss(), opt)
    xb, yb = x[:BATCH], y[:BATCH]
    step(xb, yb)
    bounds = gradient_bounds(opt.params)
    assert bounds is not None

    def best(fn: Callable[[], Any], number: int) -> float:
        return min(timeit.repeat(fn, number=number, repeat=15)) / number * 1e6

    opt.check_finite = False
    plain = best(lambda: opt._step({}), 200)
    opt.check_finite = True
    opt._step(bounds)                                   # checked once: bounds measured
    proven_before = opt.update_bounds.proven
    checked = best(lambda: opt._step(bounds), 200)
    assert opt.update_bounds.proven > proven_before     # the timed updates were proven
    scores = np.random.default_rng(0).standard_normal((BATCH, SIZES[-1])).astype(np.float32)
    batches = [(xb, yb)] * 100

    def bookkeeping() -> None:
        _train_epoch(lambda a, b: (0.5, scores), opt, batches, _Where(), History(),   # type: ignore[arg-type]
                     [_Tally(nn.CrossEntropyLoss())], _Interrupts(), summed=False)

    loop = best(bookkeeping, 5) / len(batches)
    bare_us = bare_step_s * 1e6
    return {"update check µs/step": checked - plain, "bookkeeping µs/step": loop,
            "bare step µs (its fastest epoch / steps)": bare_us,
            "estimated fit/bare": 1 + (checked - plain + loop) / bare_us}


def report_fit_vs_bare(overhead: dict[str, Any]) -> None:
    print(f"fit(compile=True) vs a bare compiled-step loop, {overhead['repeats']} rounds x "
          f"{overhead['epochs']} epochs, minima: epoch 1 {overhead['fit/bare epoch 1']:.3f}x, "
          f"later epochs {overhead['fit/bare later epochs']:.3f}x; the bare loop with the "
          f"update check: {overhead['bare+update check/bare epoch 1']:.3f}x, "
          f"{overhead['bare+update check/bare later epochs']:.3f}x")
    add = overhead["fit additions"]
    print(f"fit's additions timed alone: update check {add['update check µs/step']:.1f} µs, "
          f"bookkeeping {add['bookkeeping µs/step']:.1f} µs per step, against a bare step of "
          f"{add['bare step µs (its fastest epoch / steps)']:.0f} µs: fit/bare estimated "
          f"{add['estimated fit/bare']:.3f}x")
    per_step = {k: v for k, v in overhead.items() if "/bare per step, " in k}
    if per_step:
        print("per step, later epochs pooled: " + ", ".join(f"{k} {v:.3f}x" for k, v in per_step.items()))
    paired = {k: v for k, v in overhead.items() if k.endswith("median of paired rounds")}
    print("medians of the ratios within each round: " + ", ".join(
        f"{k.removesuffix(', median of paired rounds')} {v:.3f}x" for k, v in paired.items()
        if v is not None))


def fit_vs_bare_only(args: Any, x: np.ndarray, y: np.ndarray, source: str) -> None:
    """Run fit_vs_bare alone and put it into the results JSON, keeping its other parts."""
    overhead = fit_vs_bare(x, y, 1 if args.smoke else args.repeats, 2 if args.smoke else 4)
    report_fit_vs_bare(overhead)
    path = args.out or RESULTS / "train_throughput.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    old.pop("benchmark", None)
    old["machine (fit_vs_bare)"] = machine()
    print(f"wrote {save('train_throughput', {**old, 'fit_vs_bare': overhead, 'data': source}, path)}")


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--fit-vs-bare-only", action="store_true",
                   help="run only fit(compile=True) vs the bare compiled loop (merged into the JSON)")
    args = p.parse_args()
    n = 2048 if args.smoke else None
    repeats = 1 if args.smoke else args.repeats
    x, y, xt, yt, source = fashion_mnist(n, args.smoke)
    y, yt = y.astype(np.int64), yt.astype(np.int64)
    if args.fit_vs_bare_only:
        fit_vs_bare_only(args, x, y, source)
        return
    torch = torch_or_none(args.no_torch)
    jax = jax_or_none()
    notes = []

    def build(seed: int) -> dict[str, tuple[Callable[[int], float], Callable[[np.ndarray], np.ndarray]]]:
        """Every variant from the same start: (epoch(e) -> last loss, predict(x) -> classes)."""
        ref = NumpyMLP(SIZES, np.random.default_rng(seed))
        variants: dict[str, Any] = {}
        npm = NumpyMLP(SIZES, np.random.default_rng(seed))
        variants["numpy by hand"] = (lambda e: numpy_epoch(npm, x, y, e), npm.predict)
        hm, ho = handgrad_model(ref)
        variants["handgrad eager"] = (lambda e: handgrad_epoch(hm, ho, x, y, e),
                                      lambda a: nn.predict(hm, a).argmax(1))
        cm, co = handgrad_model(ref)
        # check_finite=False: the other loops do not check either (fit's compiled steps do)
        step = nn.compile_step(cm, nn.CrossEntropyLoss(), co, check_finite=False)
        variants["handgrad compiled"] = (lambda e: compiled_epoch(step, x, y, e),
                                         lambda a: nn.predict(cm, a).argmax(1))
        if torch is not None:
            tm, to = torch_setup(torch, ref)

            def torch_predict(model):
                def predict(a):
                    with torch.no_grad():
                        return model(torch.from_numpy(a)).argmax(1).numpy()
                return predict
            variants["pytorch eager"] = (lambda e: torch_epoch(torch, tm, to, x, y, e),
                                         torch_predict(tm))
            compiled, why = torch_compiled(torch, ref, x, y)
            if compiled is not None:
                cm_, co_, fwd = compiled
                variants["torch.compile"] = (lambda e: torch_epoch(torch, cm_, co_, x, y, e, fwd),
                                             torch_predict(cm_))
            elif why not in notes:
                notes.append(why)
        if jax is not None:
            state = jax_setup(jax, ref)
            variants["jax jit"] = (lambda e: jax_epoch(state, x, y, e),
                                   lambda a: np.asarray(state["predict"](state["params"], a)).argmax(1))
        return variants

    variants = build(0)
    last: dict[str, float] = {}
    counter = {"epoch": 0}
    timed = {k: (lambda k=k: last.__setitem__(k, variants[k][0](counter["epoch"])))
             for k in variants}
    floor_model = NumpyMLP(SIZES, np.random.default_rng(0))
    timed["matrix products alone"] = lambda: gemm_floor_epoch(floor_model, x, counter["epoch"])
    for name in variants:                     # warm-up: captures, compiles, first-touch pages
        variants[name][0](99)

    # Each round trains every variant for the same epoch (same batches), so the models
    # follow the same trajectory while being timed.
    times: dict[str, list[float]] = {k: [] for k in timed}
    for r in range(repeats):
        counter["epoch"] = r
        for k, v in interleaved(timed, 1).items():
            times[k] += v
    base = median(times["numpy by hand"])
    floor = median(times["matrix products alone"])
    rows = [{"variant": k, "epoch s (median)": median(v), "min s": min(v),
             "vs numpy": median(v) / base, "vs GEMM floor": median(v) / floor,
             "final batch loss": last.get(k, "")} for k, v in times.items()]

    # Accuracy after 5 epochs (1 in smoke mode), each variant trained from the same start.
    epochs = 1 if args.smoke else 5
    fresh = build(1)
    for row in rows:
        if row["variant"] not in fresh:
            continue
        epoch_fn, predict = fresh[row["variant"]]
        start = time.perf_counter()
        for e in range(epochs):
            epoch_fn(100 + e)
        row[f"{epochs} ep s"] = time.perf_counter() - start
        row[f"test acc ({epochs} ep)"] = float(np.mean(predict(xt) == yt))

    print(f"Training throughput: {source}, {len(x)} train / {len(xt)} test, MLP {SIZES}, "
          f"batch {BATCH}, SGD momentum {MOMENTUM}, float32, {repeats} interleaved rounds")
    print_notes(notes, torch, jax)
    columns = ["variant", "epoch s (median)", "min s", "vs numpy", "vs GEMM floor",
               "final batch loss", f"test acc ({epochs} ep)", f"{epochs} ep s"]
    print(table(rows, columns))
    overhead = fit_vs_bare(x, y, repeats, 2 if args.smoke else 4)
    report_fit_vs_bare(overhead)
    path = save("train_throughput", {"fit_vs_bare": overhead,
                                     "data": source, "n_train": len(x), "sizes": SIZES,
                                     "batch": BATCH, "repeats": repeats, "rows": rows,
                                     "times": times, "notes": notes},
                args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
