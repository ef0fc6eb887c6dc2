"""JobSpec messages from the keywords of Client.submit.

The keywords are the flags of `mixq submit` in snake_case (README, "The
client"), so a command line translates word for word. Files (model, inputs,
labels, val_inputs, val_labels) are paths, uploaded first, or "sha256:HEX"
references to files uploaded before.
"""

import os
from typing import (Any, Callable, Dict, FrozenSet, Mapping, Sequence, Tuple,
                    Union)

from mixq_client._proto import mixq_pb2

PathLike = Union[str, "os.PathLike[str]"]
# Uploads a path and returns its SHA-256 (Client.upload).
Uploader = Callable[[str], str]

ARTIFACT_PREFIX = "sha256:"
FILE_KEYWORDS = ("model", "inputs", "labels", "val_inputs", "val_labels")
# keyword -> JobSpec field.
_SPEC_SCALARS = {
    "name": "name", "objective": "objective", "calib_size": "calib_size",
    "from_job": "from_job", "val_size": "val_size", "max_samples": "max_samples",
}
# keyword -> SearchOptions field.
_SEARCH_SCALARS = {
    "candidates": "candidates", "max_layers": "max_layers",
    "finetune_steps": "finetune_steps", "warmup_steps": "warmup_steps",
    "final_steps": "final_finetune_steps", "lr": "learning_rate",
    "batch_size": "batch_size", "lambda_": "lambda", "lambda": "lambda",
    "strategy": "strategy", "selection": "selection", "seed": "seed",
    "refresh_fisher": "refresh_fisher", "land_on_budget": "land_on_budget",
    "knapsack_guided": "knapsack_guided", "pin_first_last": "pin_first_last",
    "total_finetune_steps": "total_finetune_steps",
    "hutchinson_samples": "hutchinson_samples",
    "activation_bits": "activation_bits",
}
_SEARCH_LISTS = {"bits": "bits", "activation_levels": "activation_levels"}
# keyword -> Budget field; at most one.
_BUDGETS = {
    "target_avg_bits": "avg_bits", "target_size_fraction": "size_fraction",
    "target_size_bytes": "size_bytes", "target_bops": "bops",
}
_OTHERS = ("normalize", "layer_bits", "pin")
# Client.submit's keywords, and the model-and-data ones of Client.evaluate.
KEYWORDS = frozenset(
    (*FILE_KEYWORDS, *_SPEC_SCALARS, *_SEARCH_SCALARS, *_SEARCH_LISTS,
     *_BUDGETS, *_OTHERS))
DATA_KEYWORDS = frozenset(
    (*FILE_KEYWORDS, "name", "objective", "calib_size", "val_size",
     "max_samples", "normalize"))


def data_source(value: PathLike, upload: Uploader) -> mixq_pb2.DataSource:
    """A "sha256:HEX" reference as is, else the path uploaded."""
    text = os.fspath(value)
    if text.lower().startswith(ARTIFACT_PREFIX):
        return mixq_pb2.DataSource(
            artifact_sha256=text[len(ARTIFACT_PREFIX):].lower())
    return mixq_pb2.DataSource(artifact_sha256=upload(text),
                               filename=os.path.basename(text))


def _layers(layer_bits: Mapping[str, Sequence[int]], pins: Sequence[str],
            bits: Sequence[int]) -> Dict[str, Tuple[int, ...]]:
    """Per-layer candidate bits; a pinned layer keeps only its highest (of
    its own layer_bits, else of bits), as `mixq submit --pin` does."""
    layers = {name: tuple(values) for name, values in layer_bits.items()}
    for name in pins:
        own = layers.get(name, tuple(bits))
        if not own:
            raise ValueError(f"pin: layer {name!r} has no bits to pin at")
        layers[name] = (max(own),)
    return layers


def build_job_spec(upload: Uploader, keywords: FrozenSet[str] = KEYWORDS,
                   caller: str = "submit", **kwargs: Any) -> mixq_pb2.JobSpec:
    """The JobSpec for `mixq submit`-style keywords, each one of `keywords`.

    Raises TypeError naming an unknown keyword (and `caller`), ValueError
    for several budgets or a malformed normalize; the server checks the
    rest (a MixqError with INVALID_ARGUMENT). Calls `upload` for each path.
    """
    unknown = sorted(set(kwargs) - keywords)
    if unknown:
        raise TypeError(f"{caller}() got unknown keyword(s) {', '.join(unknown)} "
                        f"(the keywords are `mixq {caller}`'s flags in "
                        "snake_case)")
    spec = mixq_pb2.JobSpec()
    for keyword in FILE_KEYWORDS:
        if kwargs.get(keyword) is not None:
            getattr(spec, keyword).CopyFrom(data_source(kwargs[keyword], upload))
    for keyword, field in _SPEC_SCALARS.items():
        if kwargs.get(keyword) is not None:
            setattr(spec, field, kwargs[keyword])
    search = spec.search
    for keyword, field in _SEARCH_SCALARS.items():
        if kwargs.get(keyword) is not None:
            setattr(search, field, kwargs[keyword])
    for keyword, field in _SEARCH_LISTS.items():
        if kwargs.get(keyword) is not None:
            getattr(search, field).extend(int(b) for b in kwargs[keyword])
    budgets = [k for k in _BUDGETS if kwargs.get(k) is not None]
    if len(budgets) > 1:
        raise ValueError(f"give one budget, not {' and '.join(budgets)}")
    for keyword in budgets:
        setattr(search.budget, _BUDGETS[keyword], kwargs[keyword])
    if kwargs.get("normalize") is not None:
        mean, std = kwargs["normalize"]
        spec.normalize.mean, spec.normalize.std = float(mean), float(std)
    layers = _layers(kwargs.get("layer_bits") or {}, kwargs.get("pin") or (),
                     kwargs.get("bits") or ())
    for name, bits in layers.items():
        search.layers.add(name=name, bits=bits)
    return spec
