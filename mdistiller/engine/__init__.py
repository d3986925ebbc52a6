"""The training engine: the loop (:mod:`.trainer`), its hooks (:mod:`.hooks`), building a
run's pieces (:mod:`.build`) and the composition root (:mod:`.run`).

The modules that used to live here moved to the package of their concern
(:mod:`mdistiller.config`, :mod:`mdistiller.solver`, :mod:`mdistiller.runs`,
:mod:`mdistiller.utils`); their old names (``mdistiller.engine.cfg`` and the others below)
stay importable for existing users' code.
"""

import sys

from ..config import defaults, load, plugins
from ..runs import checkpoint, folder, loggers
from ..solver import dot
from ..utils import cpuinfo, dist, runtime, threads

#: old module name under ``mdistiller.engine`` -> the module it is now
MOVED = {"cfg": load, "defaults": defaults, "plugins": plugins, "dot": dot, "runfolder": folder,
         "checkpoint": checkpoint, "loggers": loggers, "dist": dist, "threads": threads, "cpuinfo": cpuinfo,
         "utils": runtime}
for _old, _module in MOVED.items():
    sys.modules.setdefault(f"{__name__}.{_old}", _module)
    globals()[_old] = _module
