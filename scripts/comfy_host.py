"""Run ComfyUI in-process with this pack loaded: shared by the demo, the tests and the benchmarks.

``boot()`` imports the ComfyUI named by COMFYUI_PATH (set by scripts/host/provision.sh), forces CPU,
loads the built-in nodes and this pack, and points the model/output folders at a work directory.
``run_prompt`` runs an API-format prompt through the real PromptExecutor; ``ui_to_api`` converts a
UI-format workflow (what the frontend saves) into an API-format prompt using the nodes' INPUT_TYPES.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import os
import sys
import uuid
from dataclasses import dataclass
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STATE: dict[str, Any] = {}


def _run(x):
    return asyncio.run(x) if inspect.iscoroutine(x) else x


def comfy_path() -> str:
    path = os.environ.get("COMFYUI_PATH", "")
    if not path or not os.path.isfile(os.path.join(path, "main.py")):
        raise RuntimeError(
            f"COMFYUI_PATH={path!r} is not a ComfyUI checkout. Run `eval \"$(scripts/host/provision.sh)\"` first, "
            "or point COMFYUI_PATH at a ComfyUI folder."
        )
    return path


@dataclass
class Host:
    comfy: str
    pack_module: Any
    pack_name: str
    workdir: str

    def models(self, kind: str) -> str:
        return os.path.join(self.workdir, "models", kind)

    def output(self) -> str:
        return os.path.join(self.workdir, "output")

    def pack(self, module: str) -> Any:
        """Import a module of the loaded pack, e.g. host.pack("mixofshow_core.concept_init")."""
        import importlib

        return importlib.import_module(f"{self.pack_name}.{module}")


def boot(workdir: str, pack_dir: str = REPO) -> Host:
    """Import ComfyUI once per process, load this pack, and use ``workdir`` for models and outputs.

    Nothing of the host is patched: the pack runs as it would inside a user's ComfyUI.
    """
    if "host" in _STATE:
        _set_dirs(workdir)
        _STATE["host"].workdir = workdir
        return _STATE["host"]
    comfy = comfy_path()
    shim = os.environ.get("MOS_TORCHVISION_SHIM")
    if shim and shim not in sys.path:
        sys.path.append(shim)
    if comfy not in sys.path:
        sys.path.insert(0, comfy)
    from comfy.cli_args import args

    args.cpu = True
    if os.path.isdir(os.path.join(comfy, "utils")):  # ComfyUI 0.3.x: import before nodes (name shadowing)
        import utils.extra_config  # noqa: F401
    # isort: off (ComfyUI's own start-up order)
    import execution  # noqa: F401
    import nodes
    import server  # noqa: F401
    # isort: on

    if hasattr(nodes, "init_extra_nodes"):
        _run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    else:
        nodes.init_custom_nodes()
    _set_dirs(workdir)
    if not _run(nodes.load_custom_node(os.path.abspath(pack_dir))):
        raise RuntimeError(f"ComfyUI could not load the pack from {pack_dir}; see the log above.")
    import comfy.utils

    # main.py installs such a hook; without it interrupts never fire during sampling
    comfy.utils.set_progress_bar_global_hook(_progress_hook)
    init = os.path.join(os.path.abspath(pack_dir), "__init__.py")
    # ComfyUI 2024 names the module after the folder; newer hosts after the whole path ("." -> "_x_")
    name = next(n for n, m in list(sys.modules.items())
                if getattr(m, "__file__", None) and os.path.abspath(m.__file__) == init)
    host = Host(comfy=comfy, pack_module=sys.modules[name], pack_name=name, workdir=workdir)
    _STATE["host"] = host
    return host


def _progress_hook(value, total, preview=None, prompt_id=None, node_id=None, **_):
    """Every ComfyUI progress bar reports here: interrupts fire; the listener (if any) hears (node, value, total)."""
    import comfy.model_management as mm

    mm.throw_exception_if_processing_interrupted()
    listener = _STATE.get("listener")
    if listener is None:
        return
    if node_id is None:
        try:  # ComfyUI 0.3.4x and newer know the executing node
            from comfy_execution.utils import get_executing_context

            node_id = getattr(get_executing_context(), "node_id", None)
        except ImportError:
            pass
    if node_id is None and _STATE.get("server") is not None:
        node_id = _STATE["server"].last_node_id  # older hosts: the executor sets it on the server
    listener(node_id, value, total)


def _set_dirs(workdir: str) -> None:
    import folder_paths

    models = os.path.join(workdir, "models")
    for kind in ("checkpoints", "loras", "embeddings", "controlnet", "edloras"):
        path = os.path.join(models, kind)
        os.makedirs(path, exist_ok=True)
        folder_paths.add_model_folder_path(kind, path)
        paths = folder_paths.folder_names_and_paths[kind][0]
        paths.remove(path)
        paths.insert(0, path)  # first: writers (exports, saves) land in the work directory
    for sub, setter in (("output", folder_paths.set_output_directory), ("input", folder_paths.set_input_directory),
                        ("temp", folder_paths.set_temp_directory)):
        os.makedirs(os.path.join(workdir, sub), exist_ok=True)
        setter(os.path.join(workdir, sub))


class _Server:
    """The minimum of PromptServer that PromptExecutor talks to."""

    client_id = None
    last_node_id = None
    last_prompt_id = None

    def __init__(self):
        self.messages: list[tuple[str, Any]] = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def queue_updated(self):
        pass


@dataclass
class RunResult:
    success: bool
    outputs: dict[str, Any]
    messages: list[tuple[str, Any]]
    error: str


def validate(prompt: dict[str, Any]):
    import execution

    sig = inspect.signature(execution.validate_prompt)
    if len(sig.parameters) >= 3:
        return _run(execution.validate_prompt(str(uuid.uuid4()), prompt, None))
    return _run(execution.validate_prompt(prompt))


def run_prompt(prompt: dict[str, Any], progress=None) -> RunResult:
    """Validate and execute an API-format prompt with the real executor.

    ``progress(node_id, value, total)``, when given, hears every progress bar of the run.
    """
    import execution

    valid = validate(prompt)
    if not valid[0]:
        return RunResult(False, {}, [], f"validation failed: {valid[1]} {valid[3]}")
    server = _Server()
    _STATE.update(server=server, listener=progress)
    params = inspect.signature(execution.PromptExecutor.__init__).parameters
    if "cache_args" in params:  # newer hosts: main.py passes these
        executor = execution.PromptExecutor(server, cache_args={"lru": 0, "ram": 0, "ram_inactive": 0})
    else:
        executor = execution.PromptExecutor(server)
    try:
        _run(executor.execute(prompt, str(uuid.uuid4()), {}, valid[2]))
    finally:
        _STATE.update(server=None, listener=None)
    messages = list(getattr(executor, "status_messages", [])) + server.messages
    error = ""
    for event, data in messages:
        if event == "execution_error":
            error = f"{data.get('exception_type')}: {data.get('exception_message')}"
    history = getattr(executor, "history_result", None) or {}
    outputs = history.get("outputs", {}) or getattr(executor, "outputs_ui", {})
    return RunResult(executor.success, outputs, messages, error)


# ---------------------------------------------------------------- UI workflow -> API prompt
_WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")


def _is_widget(spec) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in _WIDGET_TYPES


def _has_control_widget(name: str, spec) -> bool:
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if "control_after_generate" in options:
        return bool(options["control_after_generate"])
    return spec[0] == "INT" and name in ("seed", "noise_seed")


def ui_to_api(workflow: dict[str, Any]) -> dict[str, Any]:
    """Convert a UI-format workflow to an API-format prompt (what the frontend's graphToPrompt does).

    Supports ordinary nodes with widgets and links; virtual nodes (Reroute, PrimitiveNode, Note) and
    muted/bypassed nodes are refused with a clear error rather than guessed.
    """
    import nodes

    links = {link[0]: link for link in workflow.get("links", [])}
    prompt: dict[str, Any] = {}
    for node in workflow["nodes"]:
        kind = node["type"]
        if kind == "Note" or kind == "MarkdownNote":
            continue
        if kind not in nodes.NODE_CLASS_MAPPINGS:
            raise ValueError(f"workflow node {node['id']} has type {kind!r}, which this ComfyUI does not know")
        if node.get("mode", 0) != 0:
            raise ValueError(f"workflow node {node['id']} ({kind}) is muted or bypassed; enable it or remove it")
        spec = nodes.NODE_CLASS_MAPPINGS[kind].INPUT_TYPES()
        ordered = list(spec.get("required", {}).items()) + list(spec.get("optional", {}).items())
        linked = {i["name"]: i["link"] for i in node.get("inputs", []) if i.get("link") is not None}
        values = list(node.get("widgets_values", []))
        inputs: dict[str, Any] = {}
        for name, input_spec in ordered:
            if _is_widget(input_spec):
                value = values.pop(0) if values else None
                if _has_control_widget(name, input_spec) and values:
                    values.pop(0)
                if isinstance(input_spec[0], list) and input_spec[1:2] and input_spec[1].get("image_upload"):
                    values.pop(0) if values else None
                if name not in linked and value is not None:
                    inputs[name] = value
            if name in linked:
                link = links[linked[name]]
                inputs[name] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": kind, "inputs": inputs}
    return prompt


logging.getLogger(__name__).addHandler(logging.NullHandler())
