"""Shipping a student: export (ONNX, TorchScript, ``torch.export``), parity proof, model card,
and the cost figures (parameters, FLOPs, CPU latency) shown beside top-1.

* :mod:`.wrap`: the logits-only wrapper and the optional uint8 preprocessing in the graph.
* :mod:`.formats`: writing and loading each format (onnxruntime for ONNX).
* :mod:`.cost`: parameters, FLOPs (``torch.utils.flop_counter``) and cached CPU latency.
* :mod:`.run_export`: a run folder's student -> exported file + ``model_card.json`` +
  ``README.md``, parity checked before anything is put in place.
"""

from .cost import count_flops, count_parameters, measure_latency, model_cost  # noqa: F401
from .formats import FORMATS, load_exported  # noqa: F401
from .wrap import LogitsOnly  # noqa: F401
