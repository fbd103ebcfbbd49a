"""The learning-rate range test (Smith 2015; fastai's `lr_find`): pick a phase's rate.

For a few dozen steps the learning rate grows exponentially from `min_lr` to `max_lr`
while the training loss is recorded; the loss is smoothed (an exponential moving
average with bias correction), the test stops once it diverges (4x the best smoothed
loss), and the suggestion is one order of magnitude below the rate at the smoothed
loss's minimum, where the loss still falls steadily rather than at the edge of
divergence. The phase runs as `fine_tune` would run it: phase 1 on cached features,
phase 2 on the boundary cache when there is one, else live, so the test of phase 1 takes
seconds. The model's weights are put back afterwards.

    splits = load_data("data/pets", image_size=160)
    finding = find_lr(model, splits, phase="head", cache=FeatureCache())
    print(finding.reason); finding.save_plot("lr.png")

Inside a run, `AutoLR` is the same test as a phase hook (`PhaseCallback.before_phase`):
given to `fine_tune`'s callbacks, it tests each phase whose `lr_auto` is set as the
phase starts, so one `fine_tune` call runs both phases and their tests in order.
"""

import dataclasses
import math
import os

import keras
import numpy as np

from transferkit.core.errors import ConfigError
from transferkit.core.files import atomic_path, write_json
from transferkit.core.rundir import lr_find_name
from transferkit.core.timing import stage
from transferkit.training.config import LRFindConfig
from transferkit.training.orchestrator import PhaseCallback, prepare_phase
from transferkit.training.schedule import ScheduleConfig, optimizer_paths, phase_optimizer

DIVERGED = 4.0  # stop when the smoothed loss exceeds this multiple of its best


@dataclasses.dataclass(frozen=True)
class LRFinding:
    """The range test's record: rates and raw and smoothed losses per step, the
    suggested rate and why, the phase, and how it ran ("features", "boundary", "live")."""

    phase: str
    mode: str
    rates: tuple
    losses: tuple
    smoothed: tuple
    suggestion: float
    reason: str

    def to_json(self):
        return dataclasses.asdict(self)

    def figure(self):
        """A matplotlib Figure of loss against rate (log scale), the suggestion marked."""
        from matplotlib.figure import Figure  # no pyplot: no global state, no display

        figure = Figure(figsize=(6, 4), layout="constrained")
        axes = figure.subplots()
        axes.plot(self.rates, self.losses, color="0.75", label="loss")
        axes.plot(self.rates, self.smoothed, label="smoothed loss")
        axes.axvline(self.suggestion, color="C3", linestyle="--",
                     label=f"suggested {self.suggestion:.2g}")
        axes.set(xscale="log", xlabel="learning rate", ylabel="training loss",
                 title=f"learning-rate range test, phase {self.phase!r} ({self.mode})")
        top = max(self.smoothed[: max(1, int(np.argmin(self.smoothed)) + 1)]) * 1.5
        axes.set_ylim(min(self.losses) * 0.9, max(top, min(self.losses) * 1.1))
        axes.legend()
        return figure

    def save(self, out_dir, name=lr_find_name()):
        """Write `<name>.json` and `<name>.png` into `out_dir` (name: `lr_find`, see
        `core.rundir.lr_find_name`); returns the PNG's path."""
        os.makedirs(out_dir, exist_ok=True)
        write_json(os.path.join(out_dir, f"{name}.json"), self.to_json())
        return self.save_plot(os.path.join(out_dir, f"{name}.png"))

    def save_plot(self, path):
        """Write `figure()` to `path` (PNG, SVG... by extension), atomically."""
        with atomic_path(path) as tmp:
            self.figure().savefig(tmp, format=str(path).rsplit(".", 1)[-1], dpi=100)
        return path


_DEFAULTS = LRFindConfig()


def find_lr(model, data, val=None, *, phase=_DEFAULTS.phase, config=ScheduleConfig(),
            parts=None, task=None, cache=None, min_lr=_DEFAULTS.min_lr,
            max_lr=_DEFAULTS.max_lr, steps=_DEFAULTS.steps, beta=_DEFAULTS.beta,
            verbose="auto"):
    """Run the range test for `phase` ("head" or "finetune", default "finetune") of
    `model`; returns an `LRFinding`. The model should be where that phase starts (for
    "finetune": after phase 1). Its weights are restored afterwards, its compiled
    optimizer is not (`fine_tune` compiles every phase anew).

    data, val, config, parts, task, cache: as for `fine_tune` (a `FeatureCache` makes
        phase 1 run on cached features and, with boundary=True, phase 2 on the boundary
        cache). min_lr, max_lr: the range (1e-7 to 1). steps: at most this many steps
        (100), fewer if the loss diverges. beta: the smoothing factor (0.98). The
        defaults are `LRFindConfig`'s.
    """
    check_range(phase, min_lr, max_lr, steps, beta)
    saved = model.get_weights()
    try:
        prepared = prepare_phase(model, data, val, phase=phase, config=config, parts=parts,
                                 task=task, cache=cache, verbose=verbose)
        return _range_test(model, prepared, phase, config.phase(phase), config, parts,
                           min_lr, max_lr, steps, beta, verbose)
    finally:
        model.set_weights(saved)


def _range_test(model, prepared, phase, settings, config, parts, min_lr, max_lr, steps,
                beta, verbose):
    """The test on `prepared` (model to fit, train, val, mode, Task: the phase frozen
    and compiled as `fine_tune` runs it); the caller restores the weights."""
    fit_model, train, _, mode, task = prepared
    growth = (max_lr / min_lr) ** (1.0 / (steps - 1))
    rate = keras.optimizers.schedules.ExponentialDecay(min_lr, decay_steps=1,
                                                       decay_rate=growth)
    # Same optimizer family, weight decay, discriminative rate and layer-wise decay as
    # the phase, so the rate found is the one the phase's `learning_rate` means.
    optimizer = phase_optimizer(settings, rate, *optimizer_paths(model, settings, parts))
    fit_model.compile(optimizer=optimizer, loss=task.loss(config.label_smoothing))
    rates, losses, smoothed, average = [], [], [], 0.0
    batches = iter(train.repeat())
    for step in range(steps):
        x, y = next(batches)
        rates.append(min_lr * growth ** step)
        loss = float(fit_model.train_on_batch(x, y, return_dict=True)["loss"])
        if not math.isfinite(loss):
            break
        average = beta * average + (1 - beta) * loss
        losses.append(loss)
        smoothed.append(average / (1 - beta ** (step + 1)))
        if smoothed[-1] > DIVERGED * min(smoothed):
            break
    rates = rates[: len(losses)]
    if len(losses) < 3:
        raise ConfigError(f"The range test diverged within {len(losses)} steps from "
                          f"min_lr={min_lr}: try a smaller min_lr.")
    suggestion, reason = suggest_rate(rates, smoothed)
    if verbose:
        print(reason)
    return LRFinding(phase, mode, tuple(rates), tuple(losses), tuple(smoothed), suggestion,
                     reason)


class AutoLR(PhaseCallback):
    """The range test as a phase hook: each phase whose `lr_auto` is set runs the test
    when it starts from its first epoch (from where the previous phase left the model)
    and trains at the suggested rate, `lr_auto` then off.

    out_dir: where each finding is saved as `lr_find_<phase>.json` / `.png` (None: not
        saved). on_found: called with {phase: rate} of the rates found so far after
        each test, e.g. to record them so a resumed run keeps them (`app.train` writes
        config.json). Other arguments as for `find_lr`. `found` holds the rates.
    """

    def __init__(self, out_dir=None, *, on_found=None, min_lr=_DEFAULTS.min_lr,
                 max_lr=_DEFAULTS.max_lr, steps=_DEFAULTS.steps, beta=_DEFAULTS.beta,
                 verbose="auto"):
        super().__init__()
        check_range(min_lr=min_lr, max_lr=max_lr, steps=steps, beta=beta)
        self.out_dir, self.on_found, self.verbose = out_dir, on_found, verbose
        self.settings = (min_lr, max_lr, steps, beta)
        self.found = {}

    def before_phase(self, name, phase, loop):
        if not phase.lr_auto:
            return phase
        saved = loop.model.get_weights()
        try:
            prepared = (*loop.runner(name, phase), loop.task)
            with stage("lr finder"):
                finding = _range_test(loop.model, prepared, name, phase, loop.config,
                                      loop.parts, *self.settings, self.verbose)
        finally:
            loop.model.set_weights(saved)
        if self.out_dir is not None:
            finding.save(self.out_dir, lr_find_name(name))
        print(f"{name} learning rate: {finding.reason}")
        self.found[name] = finding.suggestion
        if self.on_found is not None:
            self.on_found(dict(self.found))
        return dataclasses.replace(phase, learning_rate=finding.suggestion, lr_auto=False)


def check_range(phase=_DEFAULTS.phase, min_lr=_DEFAULTS.min_lr, max_lr=_DEFAULTS.max_lr,
                steps=_DEFAULTS.steps, beta=_DEFAULTS.beta):
    """Raise ConfigError unless the range test's settings make sense (before any work);
    returns them as an `LRFindConfig`."""
    return LRFindConfig(phase, min_lr, max_lr, steps, beta)


def suggest_rate(rates, smoothed):
    """(rate, reason): a tenth of the rate at the smoothed loss's minimum, where the
    loss falls steadily but is not yet near its divergence."""
    best = int(np.argmin(smoothed))
    suggestion = rates[best] / 10
    slopes = np.gradient(np.asarray(smoothed), np.log10(rates))
    # The first steps' smoothed values are dominated by the bias correction: skip them.
    skip = min(best, len(smoothed) // 10)
    steepest = skip + int(np.argmin(slopes[skip: best + 1]))
    reason = (f"suggested learning rate {suggestion:.2g}: a tenth of {rates[best]:.2g}, "
              f"where the smoothed loss is lowest ({smoothed[best]:.4g}, from "
              f"{smoothed[0]:.4g} at {rates[0]:.2g}); it falls fastest at "
              f"{rates[steepest]:.2g}")
    if best == len(smoothed) - 1:
        reason += "; the loss was still falling at the last rate tried: try a larger max_lr"
    return suggestion, reason

