"""One tuning trial in a child process: `python -m transferkit.tuning.trial JOB RESULT`.

The job (JSON, written by `process.run_in_process`) names the base recipe, the search
space, the trial's hyperparameters, Hyperband's epoch span and warm-start checkpoint;
the trial builds and fits through `TransferHyperModel`, saves the trial's checkpoint
and writes its metrics to RESULT.
"""

import json
import sys

import keras_tuner

from transferkit.core.files import write_json
from transferkit.training.cache import FeatureStore
from transferkit.training.recipe import recipe_from_dict
from transferkit.tuning.hypermodel import TransferHyperModel
from transferkit.tuning.space import space_from_dict


def run_job(job_path, result_path):
    """Run the trial described in `job_path`; write its metrics to `result_path`."""
    with open(job_path) as f:
        job = json.load(f)
    store = FeatureStore(job["store"]) if job["store"] else None
    hypermodel = TransferHyperModel(recipe_from_dict(job["base"]),
                                    space_from_dict(job["space"]), store=store,
                                    verbose=job["verbose"])
    hp = keras_tuner.HyperParameters.from_config(job["hp"])
    model = hypermodel.build(hp)
    if job["warm_start"]:
        model.load_weights(job["warm_start"])
    result = hypermodel.fit(hp, model, epochs=job["epochs"],
                            initial_epoch=job["initial_epoch"])
    model.save_weights(job["checkpoint"])
    write_json(result_path, result)


if __name__ == "__main__":
    run_job(*sys.argv[1:3])
