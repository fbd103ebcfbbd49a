"""Scale-out through tf.distribute: strategies, mixed precision, tf.data service.

    strategy = make_strategy("mirrored")          # auto | one | mirrored | multiworker | tpu
    with strategy.scope(), precision(True):       # build *and* compile inside the scope
        model = build_model(...)
        compile_for_phase(model, ...)
    model.fit(prepare_dataset(train, strategy), ...)

Batch sizes are global: `batch_size` is what one optimizer step sees in total, and Keras
splits each batch into `batch_size / num_replicas_in_sync` examples per replica
(`per_replica_batch`). Keep the global batch when adding devices to keep the results;
scale it (and the learning rate) up to gain throughput.

Keras 3.15's `fit` cannot run under `MultiWorkerMirroredStrategy` (keras-team/keras
#20585); `patch_keras_for_multiworker` fixes exactly the two functions involved, is
applied only by `make_strategy("multiworker")`, and wraps each function only while the
installed Keras still has the code that fails, so a Keras that fixes #20585 runs as is.
"""

import contextlib
import json
import os
import warnings

import keras
import tensorflow as tf

from transferkit.core.errors import ConfigError, check_choice
from transferkit.core.rundir import worker_path
from transferkit.training.config import STRATEGIES
# The code of keras/src/backend/tensorflow/trainer.py that keras-team/keras #20585 trips
# over (read in Keras 3.15): while a function still contains it, it gets the wrapper.
FAILING_CODE = {
    "_maybe_symbolic_build": 'self.distribute_strategy.reduce(\n                        "MEAN"',
    "reduce_per_replica": 'strategy.reduce("MEAN", v, axis=0)',
}


def make_strategy(name="auto"):
    """A `tf.distribute.Strategy` by name (default "auto").

    auto: multiworker when TF_CONFIG names more than one task, mirrored when there are
        several GPUs, else TensorFlow's default (no-op) strategy.
    one: one device (the first GPU, else the CPU). mirrored: all local GPUs, or all
        logical CPUs when there is no GPU. multiworker: TF_CONFIG's cluster, one
        process per worker. tpu: the TPU named by $TPU_NAME (or the local one).
    multiworker must be created before TensorFlow runs any op in the process.
    """
    check_choice("strategy", name, STRATEGIES)
    if name == "auto":
        if len(_cluster_tasks()) > 1:
            name = "multiworker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            return tf.distribute.get_strategy()
    if name == "one":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multiworker":
        if not _cluster_tasks():
            raise ConfigError("strategy='multiworker' needs the TF_CONFIG environment "
                              "variable (cluster and task of this worker). Received: "
                              f"TF_CONFIG={os.environ.get('TF_CONFIG', '')!r}")
        patch_keras_for_multiworker()
        return tf.distribute.MultiWorkerMirroredStrategy()
    return _tpu_strategy()


def _tpu_strategy():
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=os.environ.get("TPU_NAME", ""))
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.NotFoundError) as error:
        raise ConfigError(f"strategy='tpu' found no TPU ({error}). Set $TPU_NAME or use "
                          "another strategy: one of "
                          f"{', '.join(STRATEGIES)}.") from None
    return tf.distribute.TPUStrategy(resolver)


def _cluster_tasks():
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    except json.JSONDecodeError:
        raise ConfigError("TF_CONFIG is not valid JSON. Received: "
                          f"TF_CONFIG={os.environ['TF_CONFIG']!r}") from None
    return [a for job, tasks in cluster.items() if job != "evaluator" for a in tasks]


def per_replica_batch(batch_size, strategy):
    """Examples per replica for a global `batch_size` (at least one per replica)."""
    replicas = strategy.num_replicas_in_sync
    if batch_size < replicas:
        raise ConfigError(f"The `batch_size` ({batch_size}) is the global batch: it must "
                          f"be at least the number of replicas ({replicas}).")
    return batch_size // replicas


def is_chief(strategy):
    """True in the process that writes shared files (always, outside multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if not _is_multiworker(strategy) or task_type in (None, "chief"):
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and resolver.task_id == 0 and not has_chief


def worker_dir(out_dir, strategy):
    """`out_dir` for the chief; `out_dir/worker-<id>` for the other workers.

    Under multi-worker every worker runs the same program; a shared file written by
    all of them would be torn (and HDF5 refuses a second writer), so only the chief
    writes the run directory and each other worker keeps its own copy beside it.
    """
    if is_chief(strategy):
        return out_dir
    return worker_path(out_dir, strategy.cluster_resolver.task_id)


def _is_multiworker(strategy):
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())


# --- mixed precision -------------------------------------------------------------------

def precision_policy(enabled):
    """"float32", or the mixed policy of this machine: float16 on GPU, bfloat16 else."""
    if not enabled:
        return "float32"
    return "mixed_float16" if tf.config.list_logical_devices("GPU") else "mixed_bfloat16"


@contextlib.contextmanager
def precision(enabled=False):
    """Build models under the mixed policy inside the block; restore the old one after.

    heads.build_head keeps the output Dense in float32, so softmax and loss stay exact;
    Keras wraps the optimizer in a LossScaleOptimizer itself for mixed_float16.
    """
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision_policy(enabled))
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


# --- datasets --------------------------------------------------------------------------

def prepare_dataset(dataset, strategy=None, *, service=None, job_name=None):
    """A batched training/eval dataset ready for `fit` under `strategy`.

    service: a tf.data service dispatcher address ("grpc://host:port"); the pipeline
        then runs on the service's workers and this process only receives batches.
        Each worker produces whole epochs; taking the first `n` batches keeps the epoch
        length (exact with one data worker, a sample of the workers' streams with more).
    job_name: trainers sharing a job name share one stream (each batch goes to one).
    Batches stay global: Keras splits them across replicas.
    """
    if dataset is None:
        return None
    if service:
        steps = int(dataset.cardinality())
        dataset = dataset.apply(tf.data.experimental.service.distribute(
            processing_mode="parallel_epochs", service=service, job_name=job_name))
        if steps > 0:  # the service hides the length; schedules and progress need it
            dataset = dataset.take(steps).apply(tf.data.experimental.assert_cardinality(steps))
    if strategy is not None and _is_multiworker(strategy):
        options = tf.data.Options()
        # Our pipelines read a shuffled list of files, not shardable files: shard batches.
        policy = (tf.data.experimental.AutoShardPolicy.OFF if service
                  else tf.data.experimental.AutoShardPolicy.DATA)
        options.experimental_distribute.auto_shard_policy = policy
        dataset = dataset.with_options(options)
    return dataset


# --- the Keras 3 multi-worker fix --------------------------------------------------------

def multiworker_fixes_needed():
    """{function name: True if the installed Keras still has the code #20585 trips over
    there, False if it does not, None if the function cannot be found or read}."""
    import inspect

    from keras.src.backend.tensorflow import trainer

    owners = {"_maybe_symbolic_build": trainer.TensorFlowTrainer,
              "reduce_per_replica": trainer}
    needed = {}
    for name, owner in owners.items():
        try:
            source = inspect.getsource(_original(name, owner))
        except (AttributeError, OSError, TypeError):
            needed[name] = None
            continue
        needed[name] = FAILING_CODE[name] in source
    return needed


def patch_keras_for_multiworker():
    """Make Keras 3's `fit`/`evaluate` work under MultiWorkerMirroredStrategy.

    Two functions of keras/src/backend/tensorflow/trainer.py (keras-team/keras #20585):
    - `_maybe_symbolic_build` reduces a sample *data batch* across workers only to get
      shapes for building; a cross-worker reduce of input batches fails. The fix builds
      from this worker's first local replica batch (same shapes, no collective).
    - `reduce_per_replica` averages each step's scalar metrics with axis=0, which a
      scalar has not. The fix averages across replicas with axis=None, so every worker
      sees the same metrics (and early stopping decides the same on all of them).
    Both wrappers defer to Keras unchanged outside multi-worker mode. Each is applied
    only while that function still has the failing code (`multiworker_fixes_needed`);
    a Keras that changed them is used as it is, with a warning if one is missing.
    Returns the names of the functions wrapped.
    """
    from keras.src.backend.tensorflow import trainer

    needed = multiworker_fixes_needed()  # read off the originals: idempotent
    missing = sorted(name for name, need in needed.items() if need is None)
    if missing:
        warnings.warn(f"Keras {keras.__version__} has no {', '.join(missing)} in its "
                      "TensorFlow trainer, so transferkit's fix for keras-team/keras "
                      "#20585 does not apply; multi-worker training runs on Keras as is.",
                      stacklevel=2)
    if needed["_maybe_symbolic_build"]:
        original_build = _original("_maybe_symbolic_build", trainer.TensorFlowTrainer)

        def _maybe_symbolic_build(self, iterator=None, data_batch=None):
            if iterator is not None and _is_multiworker(self.distribute_strategy):
                strategy = self.distribute_strategy
                for _, _, it in iterator:
                    data_batch = keras.tree.map_structure(
                        lambda v: (strategy.experimental_local_results(v)[0]
                                   if isinstance(v, tf.distribute.DistributedValues) else v),
                        next(it))
                    break
                iterator = None
            return original_build(self, iterator=iterator, data_batch=data_batch)

        trainer.TensorFlowTrainer._maybe_symbolic_build = _wrapper(_maybe_symbolic_build,
                                                                   original_build)
    if needed["reduce_per_replica"]:
        original_reduce = _original("reduce_per_replica", trainer)

        def reduce_per_replica(values, strategy, reduction):
            if reduction in ("auto", "mean") and _is_multiworker(strategy):
                return keras.tree.map_structure(
                    lambda v: strategy.reduce("MEAN", v, axis=None), values)
            return original_reduce(values, strategy, reduction)

        trainer.reduce_per_replica = _wrapper(reduce_per_replica, original_reduce)
    return tuple(name for name, need in needed.items() if need)


def _wrapper(fixed, original):
    fixed._transferkit_original = original  # so a second patch wraps Keras, not us
    return fixed


def _original(name, owner):
    function = getattr(owner, name)
    return getattr(function, "_transferkit_original", function)


def local_copy(model):
    """`model` itself, or under a multi-replica strategy a copy bound to no strategy.

    Keras' `predict_on_batch` under MirroredStrategy runs the whole (undistributed)
    batch on every replica and concatenates the results (N x replicas rows), so
    per-batch inference after training (reports, TTA) uses this copy instead.
    """
    strategy = getattr(model, "_distribute_strategy", None)
    if strategy is None or strategy.num_replicas_in_sync == 1:
        return model
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy
