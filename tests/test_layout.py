"""The tree shows the architecture: subpackages in layers, no import cycles (imports
inside functions count), and a small public API."""

import ast
import os

import transferkit

ROOT = os.path.dirname(os.path.abspath(transferkit.__file__))
# Lower layers never import higher ones; a subpackage may import its own layer.
LAYERS = {"core": 0, "models": 1, "data": 1, "tasks": 2, "training": 3, "deploy": 3,
          "evaluation": 4, "data_doctor": 4, "app": 5, "tuning": 6, "cli": 7}


def _modules():
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                yield rel.removesuffix(".__init__"), path


def _imports(module, path):
    """transferkit modules imported anywhere in `path` (functions included)."""
    is_package = path.endswith("__init__.py")
    out = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("transferkit"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")[: len(module.split(".")) - node.level
                                         + (1 if is_package else 0)]
                base = ".".join(parts + ([node.module] if node.module else []))
            if base.startswith("transferkit"):
                out.add(base)
                out.update(f"{base}.{a.name}" for a in node.names)
    return out


def _graph():
    modules = dict(_modules())
    edges = {}
    for module, path in modules.items():
        targets = set()
        for name in _imports(module, path):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module and not module.startswith(name + "."):
                targets.add(name)
        edges[module] = targets
    return edges


def test_no_import_cycles():
    edges = _graph()
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for target in edges[node]:
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_lower_layers_never_import_higher_ones():
    wrong = []
    for module, targets in _graph().items():
        layer = module.split(".")[1] if module.count(".") else None
        for target in targets:
            other = target.split(".")[1] if target.count(".") else None
            if layer in LAYERS and other in LAYERS and LAYERS[other] > LAYERS[layer]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, wrong


def test_every_module_sits_in_a_subpackage():
    loose = [m for m in dict(_modules()) if m.count(".") == 1
             and m.split(".")[1] not in LAYERS and m.split(".")[1] != "__main__"]
    assert not loose, loose


def test_the_public_api_is_small_and_complete():
    """`__all__` holds the workflows, their configs and the errors (as Keras's does);
    internals live in their subpackages."""
    public = set(transferkit.__all__)
    assert len(public) <= 50
    for name in public:
        assert getattr(transferkit, name) is not None, name
    workflows = {"train", "fine_tune", "tune", "load_data", "build_model", "export_model",
                 "predict", "load_run", "doctor", "add_classes", "scan", "load_model"}
    configs = {"RecipeConfig", "DataConfig", "AugmentConfig", "ModelConfig", "HeadConfig",
               "ScheduleConfig", "PhaseConfig", "RuntimeConfig", "FreezePolicy",
               "FeatureCache", "SearchSpace"}
    errors = {n for n in public if n.endswith("Error")}
    assert workflows | configs <= public and len(errors) >= 5
    assert not {"Position", "ModelParts", "InputSpec"} & public


def test_no_code_outside_the_tasks_package_branches_on_the_task_kind():
    """A task's differences are methods of its Task (transferkit/tasks/): elsewhere no
    `.dense`, no comparison with a task name, no isinstance with a task class."""
    from transferkit.core.task_registry import get_task, task_names

    names = set(task_names())
    classes = {type(get_task(n)).__name__ for n in names} | {"Task"}

    def constants(node):
        items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
        return {i.value for i in items if isinstance(i, ast.Constant)}

    wrong = []
    tasks_dir = os.path.join(ROOT, "tasks") + os.sep
    for module, path in _modules():
        if path.startswith(tasks_dir):
            continue
        for node in ast.walk(ast.parse(open(path).read())):
            where = f"{module}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Attribute) and node.attr in ("dense", "infer_task"):
                wrong.append(f"{where} .{node.attr}")
            elif isinstance(node, ast.Name) and node.id == "infer_task":
                wrong.append(f"{where} infer_task")
            elif isinstance(node, ast.Compare):
                found = set().union(*(constants(n) for n in [node.left, *node.comparators]))
                if found & names:
                    wrong.append(f"{where} compares with {sorted(found & names)}")
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id == "isinstance" and len(node.args) == 2):
                used = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                if used & classes:
                    wrong.append(f"{where} isinstance with {sorted(used & classes)}")
    assert not wrong, wrong
