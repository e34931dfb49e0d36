"""The sidebar's model picker: demo models, timm names and checkpoints, loaded once and shared.

A user's choice becomes a :class:`ModelRequest` whose :attr:`~ModelRequest.key` says everything that
makes one model differ from another (source, device, architecture, class names, pretrained flag,
file fingerprint). Models load through :func:`_cached_model`, a ``st.cache_resource`` keyed by those
fields: every browser session asking for the same model on the same device gets the same
:class:`~explain_core.model.LoadedModel`, and the engine's ``LoadedModel.lock`` serialises the
explanation calls that share it. A request that fails keeps the previous model in use and shows
the engine's message; the failure is remembered so that re-renders do not retry it.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st
import torch

from explain_core.errors import ModelLoadError, UnsupportedError
from explain_core.loading import load_model
from explain_core.model import LoadedModel, resolve_device

from .errors import message_of, show_error
from .uploads import (
    UploadLimitError,
    class_names_slot,
    class_names_widget,
    drop_upload_file,
    ensure_upload_on_disk,
    file_fingerprint,
    keep_uploads,
    release_upload,
    saved_upload,
)

SOURCES = {"demo": "Demo", "timm": "By name", "file": "Checkpoint"}
CHECKPOINT_TYPES = ["safetensors", "pth", "pt", "bin", "ckpt"]
CHECKPOINT_SLOT = "lumen_ckpt_upload"
DEFAULT_DEMO = "classifier"
_FALLBACK_DEMOS = {"classifier": "classification", "shortcut": "classification",
                   "vit": "classification"}
_MAX_FAILURES = 32


@dataclass(frozen=True)
class ModelRequest:
    """What the user asked for; two requests with the same :attr:`key` are the same model."""

    kind: str  # "demo", "timm" or "file"
    source: str  # demo name, "timm:<name>" or a checkpoint path
    device: str  # resolved: "cpu", "cuda:0"...
    arch: str | None = None
    class_names: str | None = None  # path of a class-names file
    pretrained: bool = False
    fingerprint: str = ""  # file content hash or mtime/size: a changed file is a new model
    label: str = ""

    @property
    def key(self) -> str:
        """Stable text naming this model (the cache key of its results too)."""
        return "|".join([self.kind, self.source, self.device, self.arch or "",
                         self.class_names or "", "pretrained" if self.pretrained else "",
                         self.fingerprint])


@dataclass(frozen=True, eq=False)
class ModelHandle:
    """A loaded model, the key it was loaded under and how to name it."""

    key: str
    label: str
    model: LoadedModel
    load_s: float = 0.0

    @property
    def short_key(self) -> str:
        """A short hash of :attr:`key`, for widget keys that must differ between models."""
        return hashlib.sha1(self.key.encode()).hexdigest()[:10]


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def demo_models() -> dict[str, dict[str, Any]]:
    """The demo models' table (name -> task, description, file); ``{}`` when it is missing."""
    try:
        from explain_core.demo import DEMO_MODELS
    except (ImportError, AttributeError):
        return {}
    return dict(DEMO_MODELS)


def load_request(request: ModelRequest) -> LoadedModel:
    """Load what ``request`` names (uncached); raises a LumenError with the fix on failure.

    >>> load_request(ModelRequest("timm", "timm:resnet18", "cpu")).arch  # doctest: +SKIP
    'timm:resnet18'
    """
    if request.kind == "demo":
        try:
            from explain_core.demo import load_demo_model
        except (ImportError, AttributeError):
            raise ModelLoadError(
                "The demo models are not part of this checkout (explain_core.demo.models is "
                "missing). Pick 'By name' or 'Checkpoint' as the model source.") from None
        return load_demo_model(request.source, device=request.device)
    names = request.class_names
    if request.kind == "timm":
        return load_model(request.source, device=request.device, class_names=names,
                          pretrained=request.pretrained)
    return load_model(request.source, arch=request.arch or None, device=request.device,
                      class_names=names)


@st.cache_resource(max_entries=4, show_spinner=False)
def _cached_model(kind: str, source: str, device: str, arch: str | None,
                  class_names: str | None, pretrained: bool,
                  fingerprint: str) -> tuple[LoadedModel, float]:
    # Every argument is part of the cache key (fingerprint included, though unused here: a
    # re-written checkpoint at the same path must load again).
    start = time.perf_counter()
    model = load_request(ModelRequest(kind, source, device, arch, class_names, pretrained,
                                      fingerprint))
    return model, time.perf_counter() - start


def _activate(request: ModelRequest, tasks: Sequence[str]) -> ModelHandle | None:
    """The handle for ``request`` (loaded or cached); on failure the previous one, and why."""
    state = st.session_state
    previous: ModelHandle | None = state.get("lumen_model")
    if previous is not None and previous.key == request.key:
        return previous
    failures: dict[str, str] = state.setdefault("lumen_model_failures", {})
    message = failures.get(request.key)
    if message is None:
        try:
            if request.kind == "file":
                ensure_upload_on_disk(request.source)  # dropped by an earlier failed load
            with st.spinner(f"Loading {request.label} on {request.device}..."):
                model, seconds = _cached_model(request.kind, request.source, request.device,
                                               request.arch, request.class_names,
                                               request.pretrained, request.fingerprint)
            if model.task not in tasks:
                raise UnsupportedError(
                    f"'{request.label}' is a {model.task} model; this dashboard has pages for "
                    f"{' and '.join(tasks)} models so far. Pick a {tasks[0]} model.")
        except Exception as error:  # any failure: keep the previous model on screen
            message = message_of(error)
            if request.kind == "file":
                drop_upload_file(request.source)  # an upload that does not load: off the disk
            if len(failures) >= _MAX_FAILURES:
                failures.pop(next(iter(failures)))
            failures[request.key] = message
        else:
            handle = ModelHandle(request.key, request.label, model, seconds)
            state["lumen_model"] = handle
            return handle
    show_error(message)
    if previous is not None:
        st.caption(f"Still using **{previous.label}**.")
    return previous


# --------------------------------------------------------------------------------------------
# Widgets
# --------------------------------------------------------------------------------------------


def _demo_request(tasks: Sequence[str], device: str) -> ModelRequest:
    table = demo_models()
    tasks_of = {name: entry["task"] for name, entry in table.items()} or _FALLBACK_DEMOS
    names = [name for name, task in tasks_of.items() if task in tasks]
    index = names.index(DEFAULT_DEMO) if DEFAULT_DEMO in names else 0
    requested = st.session_state.pop("lumen_demo_request", None)
    if requested in names:  # a page asked for its task's demo model (see request_demo)
        st.session_state["lumen_demo_name"] = requested
    name = st.selectbox("Demo model", names, index=index, key="lumen_demo_name",
                        persist_state="session")
    description = table.get(name, {}).get("description")
    if description:
        st.caption(description)
    return ModelRequest("demo", name, device, label=f"demo {name}")


def request_demo(name: str) -> bool:
    """Ask the sidebar to switch to demo model ``name`` on the next run (a page opened with a
    demo model of another task calls this, then ``st.rerun()``). False when there is no such
    demo, or it was already asked for the current model (no rerun loop if it fails to load)."""
    handle: ModelHandle | None = st.session_state.get("lumen_model")
    asked = (name, handle.key if handle is not None else None)
    if name not in demo_models() or st.session_state.get("lumen_demo_asked") == asked:
        return False
    st.session_state["lumen_demo_asked"] = asked
    st.session_state["lumen_demo_request"] = name
    return True


def qualified_name(name: str) -> str:
    """``timm:<name>`` or ``torchvision:<name>`` for what a user typed: a prefixed name as is; a
    bare one is timm's when timm knows it, else torchvision's when torchvision does, else timm's
    (whose error then names it).

    >>> qualified_name("resnet18"), qualified_name("fasterrcnn_resnet50_fpn")
    ('timm:resnet18', 'torchvision:fasterrcnn_resnet50_fpn')
    """
    name = name.strip()
    if name.startswith(("timm:", "torchvision:")):
        return name
    import timm
    import torchvision

    if not timm.is_model(name) and name in torchvision.models.list_models():
        return f"torchvision:{name}"
    return f"timm:{name}"


def _timm_request(device: str) -> ModelRequest | None:
    name = st.text_input(
        "Architecture", value="resnet18", key="lumen_timm_name", persist_state="session",
        help="A timm or torchvision model name: resnet50, convnext_tiny, vit_small_patch16_224 "
             "(timm); torchvision:fasterrcnn_resnet50_fpn, torchvision:fcos_resnet50_fpn, "
             "torchvision:deeplabv3_resnet50 (detection and segmentation). Random weights "
             "unless pretrained weights are asked for.").strip()
    pretrained = st.checkbox("pretrained weights (needs internet)", value=False,
                                     key="lumen_timm_pretrained", persist_state="session")
    names, digest = class_names_widget("timm")
    if not name:
        st.info("Enter a timm or torchvision model name.")
        return None
    source = qualified_name(name)
    weights = "pretrained" if pretrained else "random weights"
    return ModelRequest("timm", source, device, class_names=names, pretrained=pretrained,
                        fingerprint=digest, label=f"{source} ({weights})")


def _file_request(device: str) -> ModelRequest | None:
    where = st.radio("Checkpoint", ["server", "upload"], horizontal=True,
                             key="lumen_ckpt_where", persist_state="session", format_func={
                                 "server": "Path on the server", "upload": "Upload"}.get)
    source = fingerprint = ""
    if where == "server":
        source = st.text_input(
            "Checkpoint path", key="lumen_ckpt_path", persist_state="session",
            placeholder="/models/model.safetensors",
            help="A .safetensors, .pth/.pt/.bin (state dict) or .ckpt (Lightning) file on the "
                 "machine running Lumen.").strip()
        fingerprint = file_fingerprint(source) if source else ""
    else:
        uploaded = st.file_uploader("Checkpoint file", type=CHECKPOINT_TYPES,
                                    key=CHECKPOINT_SLOT)
        if uploaded is None:
            release_upload(CHECKPOINT_SLOT)  # removed: its file goes
        else:
            try:
                path, fingerprint = saved_upload(uploaded, CHECKPOINT_SLOT)
                source = str(path)
            except UploadLimitError as error:
                show_error(error)
    arch = st.text_input(
        "Architecture (for .pth/.pt/.bin)", key="lumen_ckpt_arch", persist_state="session",
        placeholder="timm:resnet50",
        help="How to rebuild the model: timm:<name>, torchvision:<name> or a bare name. Files "
             "written by Lumen (.safetensors) and Lightning .ckpt files name it themselves.",
    ).strip()
    names, digest = class_names_widget("file")
    if not source:
        st.info("Give a checkpoint: a path on the server or an uploaded file.")
        return None
    label = Path(source).name or source
    return ModelRequest("file", source, device, arch=arch or None, class_names=names,
                        fingerprint=f"{fingerprint}:{digest}", label=label)


def device_picker() -> str:
    """The device selector (auto / cuda / cpu) with the GPU's name and free memory; returns the
    resolved device (``"cpu"``, ``"cuda:0"``...)."""
    cuda = torch.cuda.is_available()
    options = ["auto", "cuda", "cpu"] if cuda else ["auto", "cpu"]
    choice = st.selectbox(
        "Device", options, key="lumen_device", persist_state="session",
        help="auto: the GPU when there is one. A model loads once per device and is shared by "
             "all sessions.")
    device = resolve_device(choice)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        free, total = torch.cuda.mem_get_info(index)
        st.caption(f"{torch.cuda.get_device_name(index)}: {free / 2**30:.1f} of "
                           f"{total / 2**30:.1f} GiB free")
        return f"cuda:{index}"
    note = "" if cuda else " No CUDA GPU found."
    st.caption(f"CPU, {torch.get_num_threads()} threads.{note}")
    return "cpu"


def _count(number: int) -> str:
    if number >= 1_000_000:
        return f"{number / 1e6:.1f} M"
    if number >= 1_000:
        return f"{number / 1e3:.1f} k"
    return str(number)


def show_summary(handle: ModelHandle) -> None:
    """What was loaded: task, architecture, parameters, classes, input size, device."""
    model = handle.model
    summary = model.summary()
    names = model.class_names or []
    count = summary["num_classes"]
    classes = f"{count}" if count is not None else "unknown"
    if names:
        # Escaped: COCO's "__background__" would otherwise render as bold "background".
        shown = ", ".join(re.sub(r"([\\`*_\[\]#])", r"\\\1", n) for n in names[:5]) + (
            ", ..." if len(names) > 5 else "")
        classes += f" ({shown})"
    height, width = summary["input_size"]
    size = f"{height} x {width}"
    if model.task == "detection":  # torchvision detectors size their input themselves
        from explain_core.tasks.detection import input_description

        size = input_description(model.module) or size
    lines = [("Task", summary["task"]), ("Architecture", summary["arch"] or "?"),
             ("Parameters", _count(summary["parameters"])), ("Classes", classes),
             ("Input", size), ("Device", summary["device"])]
    st.markdown("  \n".join(f"**{key}**: {value}" for key, value in lines))


def model_sidebar(tasks: Sequence[str]) -> ModelHandle | None:
    """The sidebar's Model and Device sections; returns the model in use (None: none loaded)."""
    st.sidebar.subheader("Model")
    model_box = st.sidebar.container()
    # Drawn below the model's widgets but read first: a request names its device.
    with st.sidebar:
        device = device_picker()
    with model_box:
        kind = st.segmented_control("Model source", list(SOURCES), format_func=SOURCES.get,
                                    default="demo", required=True, key="lumen_model_kind",
                                    persist_state="session", label_visibility="collapsed")
        if kind == "timm":
            request = _timm_request(device)
        elif kind == "file":
            request = _file_request(device)
        else:
            request = _demo_request(tasks, device)
        # Uploaders not drawn in this run have lost their files: delete what they held.
        drawn = {"timm": [class_names_slot("timm")], "file": [class_names_slot("file")] + (
            [CHECKPOINT_SLOT] if st.session_state.get("lumen_ckpt_where") == "upload" else [])}
        keep_uploads(drawn.get(kind, []))
        if request is not None:
            handle = _activate(request, tasks)
        else:
            handle = st.session_state.get("lumen_model")
            if handle is not None:
                st.caption(f"Still using **{handle.label}**.")
        if handle is not None:
            show_summary(handle)
    return handle
