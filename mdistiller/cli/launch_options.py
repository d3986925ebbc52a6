"""The launch options ``sweep.py`` and ``tune.py`` share: ``--launcher`` and SLURM's (see
:mod:`mdistiller.tune.launch`)."""

from ..tune.launch import LAUNCHERS, SlurmOptions
from ..utils.errors import ConfigError
from .common import number


def add_launcher_args(parser, array=False):
    """``--launcher`` and the SLURM options (``array``: ``--slurm-array-parallelism``)."""
    g = parser.add_argument_group("launch (submitit)")
    g.add_argument("--launcher", choices=LAUNCHERS, default="local",
                   help="local: this machine; submitit-local: submitit's local executor; slurm: SLURM jobs")
    g.add_argument("--slurm-partition", default=None, help="SLURM partition")
    g.add_argument("--gpus-per-job", type=number(int, low=0), default=0, help="GPUs of each SLURM job")
    g.add_argument("--cpus-per-job", type=number(int, low=1), default=None,
                   help="CPUs of each SLURM job (default: DATASET.NUM_WORKERS + 1)")
    g.add_argument("--time", type=number(int, low=1), default=240, help="time limit of each SLURM job, minutes")
    g.add_argument("--slurm-extra", action="append", default=[], metavar="KEY=VALUE",
                   help="further sbatch parameter (e.g. account=myproj, qos=high); repeatable")
    if array:
        g.add_argument("--slurm-array-parallelism", type=number(int, low=1), default=8,
                       help="runs of the job array running at once")


def slurm_options(args, cpus_default=1):
    """The SLURM options of ``args``; a malformed ``--slurm-extra`` or a SLURM option without
    ``--launcher slurm`` is one line."""
    extra = []
    for item in args.slurm_extra:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"--slurm-extra '{item}' must look like KEY=VALUE (an sbatch parameter, e.g. account=me)")
        extra.append((key.strip().replace("-", "_"), value.strip()))
    given = [o for o, v in (("--slurm-partition", args.slurm_partition), ("--slurm-extra", args.slurm_extra),
                            ("--gpus-per-job", args.gpus_per_job), ("--cpus-per-job", args.cpus_per_job)) if v]
    if given and args.launcher != "slurm":
        raise ConfigError(f"{given[0]} is a SLURM option; add --launcher slurm (or leave it out)")
    return SlurmOptions(args.slurm_partition, args.gpus_per_job, args.cpus_per_job or cpus_default, args.time,
                        tuple(extra), getattr(args, "slurm_array_parallelism", 8))
