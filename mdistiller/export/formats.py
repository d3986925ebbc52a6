"""Writing and loading the export formats: ONNX (run by onnxruntime), TorchScript, ``torch.export``.

``write(fmt, module, example, path, opset, dynamic)`` writes ``module`` (taking one NCHW
tensor ``x``) to ``path``; ``load_exported(path)`` returns a callable taking a torch tensor
and returning float32 logits (a torch tensor), whatever the format. An exporter failure is
an :class:`ExportError` naming the operator or the reason, in one line.
"""

import contextlib
import io
import logging
import os
import re
import warnings

import torch

from ..utils.errors import ConfigError, MdistillerError

#: format -> file suffix of the exported student
FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript", "pt2": ".pt2"}
EXPORT_EXTRA = "pip install -e .[export]"
DEFAULT_OPSET = 18


class ExportError(MdistillerError, RuntimeError):
    """The model cannot be exported (an unsupported operator, a data-dependent shape...)."""


def require_onnx():
    """onnx, onnxscript (torch's ONNX exporter) and onnxruntime, or a one-line ConfigError."""
    missing = []
    for mod in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise ConfigError(f"--format onnx needs {', '.join(missing)} (not installed); install the export extra: "
                          f"{EXPORT_EXTRA}, or pick --format torchscript or pt2")


def format_of(path):
    """The format of an exported file by its suffix, or None."""
    for fmt, suffix in FORMATS.items():
        if path.endswith(suffix):
            return fmt
    return None


def reason_of(e):
    """The operator or reason in an exporter's (often very long) error text, one line: the
    ONNX exporter's exception summary (which names the operator) when it has one, else the
    first line, preceded by the operator named in a line saying it is unsupported."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(str(x) for x in (e, e.__cause__) if x is not None))
    summary = re.search(r"## Exception summary\s*<class '[^']*'>: ([^\n]+)", text)
    first = summary.group(1) if summary else next((line for line in text.splitlines() if line.strip()),
                                                  type(e).__name__)
    for line in text.splitlines():
        if not summary and re.search(r"not supported|unsupported|no decomposition|not implemented", line, re.I):
            m = re.search(r"(aten::[\w.]+|aten\.[\w.]+|torch\.ops\.[\w.]+)", line)
            if m and m.group(1) not in first:
                first = f"operator {m.group(1)}: {first}"
            break
    return " ".join(first.split())[:300]


def _dynamic_shapes(dynamic):
    if not dynamic:
        return None
    return {"x": {0: torch.export.Dim("batch", min=1, max=4096)}}


def write(fmt, module, example, path, opset=None, dynamic=True):
    """Export ``module`` (eval mode, CPU) with input ``example`` to ``path`` in ``fmt``."""
    module.eval()
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # torch's exporters log pages of warnings; a failure is one line below
    try:
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):  # the exporters also print graphs
            warnings.simplefilter("ignore")
            if fmt == "onnx":
                require_onnx()
                program = torch.onnx.export(module, (example,), None, input_names=["x"], output_names=["logits"],
                                            opset_version=opset or DEFAULT_OPSET, dynamo=True,
                                            dynamic_shapes=_dynamic_shapes(dynamic), optimize=True, verbose=False)
                program.save(path, external_data=False)
            elif fmt == "torchscript":
                traced = torch.jit.trace(module, (example,), check_trace=False)
                traced.save(path)
            elif fmt == "pt2":
                program = torch.export.export(module, (example,), dynamic_shapes=_dynamic_shapes(dynamic))
                torch.export.save(program, path)
            else:
                raise ConfigError(f"unknown export format '{fmt}'; use one of {', '.join(FORMATS)}")
    except MdistillerError:
        raise
    except Exception as e:  # noqa: BLE001 - exporters raise many kinds; the user gets one line
        raise ExportError(f"cannot export to {fmt}: {reason_of(e)}; try another --format "
                          f"({', '.join(f for f in FORMATS if f != fmt)}) or --batch N") from e
    finally:
        logging.disable(previous)
    return path


def load_exported(path, threads=None):
    """A callable ``x (torch tensor) -> logits (float32 torch tensor)`` for an exported file."""
    fmt = format_of(path)
    if fmt is None:
        raise ConfigError(f"'{path}' is not an exported student (expected a name ending in "
                          f"{', '.join(FORMATS.values())})")
    if not os.path.isfile(path):
        raise ConfigError(f"exported file '{path}' does not exist; export it with tools/export.py RUN_DIR")
    try:
        if fmt == "onnx":
            require_onnx()
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads or torch.get_num_threads()
            opts.inter_op_num_threads = 1
            session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name

            def run(x):
                return torch.from_numpy(session.run(None, {name: x.detach().cpu().contiguous().numpy()})[0])

            run.input_dtype = torch.uint8 if session.get_inputs()[0].type == "tensor(uint8)" else torch.float32
            return run
        if fmt == "torchscript":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
                module = torch.jit.load(path, map_location="cpu")
        else:
            module = torch.export.load(path).module()
    except MdistillerError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged file can fail anywhere in the loader
        raise ConfigError(f"cannot load exported file '{path}' ({reason_of(e)}); export it again") from None

    def run_torch(x):
        with torch.no_grad():
            return module(x).float()

    run_torch.input_dtype = None  # recorded in the model card
    return run_torch
