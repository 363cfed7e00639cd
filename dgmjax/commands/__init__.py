"""The commands ``dgmjax train|import|eval|sample|complete|interpolate|manipulate|fid``
(registered in ``dgmjax.cli.COMMANDS``; what they share is in ``workdirs``).

    dgmjax import --checkpoint FILE --workdir DIR [--config CFG] [--weights ema|model]
    dgmjax eval   --workdir DIR [--iw_samples K] [--orders s_curve:all]
    dgmjax sample --workdir DIR [--order NAME] [--temperature T] [--mixture_temperature T]
                  [--logistic_temperature T] [--group_temperatures T1,..,TG]
                  [--readjust_bn [--readjust_steps N]]
    dgmjax complete --workdir DIR --observed top|bottom|left|right|center|random:P|MASK.png
                  [--order NAME] [--num N]                                     (LMConv)
    dgmjax interpolate --workdir DIR [--num N] [--pairs P] [--endpoints auto|test|samples]
                                                                        (Glow, NVAE)
    dgmjax manipulate --workdir DIR --attribute NAME|class:C [--strengths A,B,..]
                                                                        (Glow, NVAE)
    dgmjax fid    --workdir DIR --inception FILE [--num N] [--reference DATASET:SPLIT|S.npz]

Flag definitions and run functions registered in ``dgmjax.cli.COMMANDS``; the work itself
is done by the library (``dgmjax.convert.official``, ``dgmjax.lmconv.completion``,
``dgmjax.train``) and the models. This module imports only the standard
library at load time (``dgmjax --help`` stays fast).

Configs: ``--config`` is optional for eval/sample/complete/interpolate when the workdir
stores one: ``dgmjax train`` and ``dgmjax import`` keep ``config.to_json()`` in every
checkpoint's meta (``meta["config"]``), and ``import`` also writes ``DIR/config.json``.

An imported workdir holds one regular checkpoint, step 0: a ``TrainState`` whose params
(and EMA params) are the file's weights, a fresh optimiser state of the config's
optimiser, and the file's BN statistics / constants as the model state; its meta records
the source file. ``dgmjax train`` on it fine-tunes from there.

NVAE BN re-adjustment (``sample --readjust_bn``) is stored beside the checkpoints, never
inside them: ``DIR/readjusted_bn/<key>/`` is an orbax item holding the tree
``readjusted_batch_stats`` (the model's named state), keyed by the checkpoint step, the
re-adjustment settings and a fingerprint of the weights, written atomically (orbax
renames a finished temporary directory), and restored on later calls with the same key.
"""

from dgmjax.commands.evaluation import define_eval, run_eval
from dgmjax.commands.fid import define_fid, run_fid
from dgmjax.commands.figures import (define_complete, define_interpolate, run_complete,
                                     run_interpolate)
from dgmjax.commands.importing import data_from_args, define_import, run_import
from dgmjax.commands.sampling import define_sample, run_sample
from dgmjax.commands.training import run_train
from dgmjax.commands.workdirs import CONFIG_FILE, READJUST_DIR, config_for, stored_config

__all__ = ["CONFIG_FILE", "READJUST_DIR", "config_for", "data_from_args", "define_complete",
           "define_eval", "define_fid", "define_import", "define_interpolate", "define_sample",
           "run_complete", "run_eval", "run_fid", "run_import", "run_interpolate", "run_sample",
           "run_train", "stored_config"]
