"""The registry of tasks: how every layer turns a task name into its `Task` object.

The concrete tasks live in `transferkit.tasks` (above core, models, data and
evaluation), which registers the built-in ones when `transferkit` is imported: their
names at once, each task's code (and TensorFlow) when it is first asked for
(`register_task_loader`). Lower layers only look a task up here and call its methods;
none of them knows which kinds of task exist (the name of the default one,
`DEFAULT_TASK`, aside).

    task = get_task("binary")           # the registered Task object
    get_task(task) is task              # a Task passes through
    task_for_model(model)               # the task a model's output implies
"""

from transferkit.core.errors import ConfigError, suggest

# Probabilities are clipped to [EPSILON, 1 - EPSILON] before any log: by every task's
# scores and by the temperature layer, so the two agree.
EPSILON = 1e-7

# The task of a model, a dataset or a recipe when none is named.
DEFAULT_TASK = "multiclass"

_TASKS = {}  # name -> Task, in registration order
_LOADERS = {}  # name -> function returning the Task, for tasks not loaded yet


def register_task(task):
    """Add a Task instance under `task.name`; a second one with that name raises."""
    name = getattr(task, "name", "")
    if not name:
        raise ConfigError(f"A task needs a non-empty `name`. Received: {task!r}")
    if name in _TASKS:
        raise ConfigError(f"A task named {name!r} is already registered "
                          f"(registered: {task_names()}).")
    _TASKS[name] = task
    return task


def register_task_loader(name, load):
    """Add task `name`, made by `load()` (a function returning its Task) when the task
    is first asked for: its name is known at once, its code (and TensorFlow) loads then."""
    if name in _TASKS:
        raise ConfigError(f"A task named {name!r} is already registered "
                          f"(registered: {task_names()}).")
    _TASKS[name] = _LOADERS[name] = load


def _loaded(name):
    task = _TASKS[name]
    if _LOADERS.get(name) is task:
        loaded = task()
        if getattr(loaded, "name", None) != name:
            raise ConfigError(f"The loader of task {name!r} returned a task named "
                              f"{getattr(loaded, 'name', None)!r}.")
        _TASKS[name] = loaded
        del _LOADERS[name]
    return _TASKS[name]


def task_names():
    """The registered task names, in registration order."""
    return list(_TASKS)


def get_task(task):
    """The registered `Task` named `task` (a Task object passes through unchanged)."""
    if not isinstance(task, str):
        if hasattr(task, "name") and hasattr(task, "score"):  # already a Task
            return task
        raise ConfigError(f"The `task` argument should be a task name, one of "
                          f"{task_names()}, or a Task. Received: task={task!r}")
    if task not in _TASKS:
        raise ConfigError(f"The `task` argument should be one of {task_names()}. "
                          f"Received: task={task!r}.{suggest(task, _TASKS)}")
    return _loaded(task)


def task_for_model(model):
    """The first registered Task (in registration order) whose `matches_output(model)`
    says the model's output layer is its kind. Saved models carry their task in their
    metadata; this is for models that do not."""
    for task in map(_loaded, list(_TASKS)):
        if task.matches_output(model):
            return task
    raise ConfigError(f"No registered task (of {task_names()}) recognises the output "
                      f"of model {getattr(model, 'name', model)!r} "
                      f"(shape {getattr(model, 'output_shape', '?')}); pass `task`.")
