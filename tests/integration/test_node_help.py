"""Every node's help page (web/docs/<NodeId>.md), fetched from the real server as the frontend's help panel does.

The frontend (comfyui-frontend-package 1.32.9, NodeHelpService.fetchCustomNodeHelp) asks for
``/extensions/<folder>/docs/<NodeId>/<locale>.md``, then ``/extensions/<folder>/docs/<NodeId>.md``; <folder> is
the second part of the node's python_module ``custom_nodes.<folder>`` (before any ``@``), and
``/extensions/<folder>/`` serves the pack's WEB_DIRECTORY (web/). The pages keep one layout: a paragraph, an
Inputs table whose rows name each input in backticks, an Outputs table likewise, "Typical use" and "Errors".
"""
import glob
import importlib.util
import json
import os
import pathlib
import re
import urllib.error
import urllib.parse
import urllib.request

import pytest
from integration.browser_support import QUIET_SETTINGS, available, chromedriver, open_app
from integration.host_support import running_server

DOCS = pathlib.Path(__file__).resolve().parents[2] / "web" / "docs"
SECTIONS = ("## Inputs", "## Outputs", "## Typical use", "## Errors")


def pack_folder(python_module: str) -> str | None:
    """The folder name the frontend puts in a custom node's help URL (its extractCustomNodeName)."""
    parts = (python_module or "").split(".")
    return parts[1].split("@")[0] if len(parts) >= 2 and parts[0] == "custom_nodes" else None


def table_names(page: str, heading: str) -> list[str]:
    """The backticked name that starts each row of the table under ``heading`` (header rows skipped)."""
    section = page.split(heading + "\n", 1)[1].split("\n## ", 1)[0]
    names = []
    for line in section.splitlines():
        first = line.split("|")[1] if line.startswith("|") else ""
        match = re.match(r"\s*`([^`]+)`", first)
        if match:
            names.append(match.group(1))
    return names


def page_problems(name: str, page: str, inputs: list[str], outputs: list[str]) -> list[str]:
    missing = [s for s in SECTIONS if not re.search(f"^{s}( and .*)?$", page, re.M)]  # "## Errors and tips" too
    if missing:
        return [f"{name}: no {missing}"]
    problems = []
    documented = table_names(page, "## Inputs")
    if sorted(documented) != sorted(inputs):
        problems.append(f"{name}: inputs table lacks {sorted(set(inputs) - set(documented))}, has extra "
                        f"{sorted(set(documented) - set(inputs))} or repeats a row")
    if table_names(page, "## Outputs") != outputs:
        problems.append(f"{name}: outputs table {table_names(page, '## Outputs')}, node outputs {outputs}")
    return problems


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("help"), settings=QUIET_SETTINGS) as url:
        yield url


@pytest.fixture(scope="module")
def our_nodes(server):
    with urllib.request.urlopen(server + "/object_info", timeout=60) as r:
        info = json.loads(r.read())
    ours = {name: node for name, node in info.items()
            if pack_folder(node.get("python_module")) == "ComfyUI-Mix-of-Show"}
    assert len(ours) >= 20 and "EDLoRALoader" in ours and "RegionalKSampler" in ours
    return ours


def _fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode("utf-8")
    except urllib.error.HTTPError as err:
        return err.code, ""


def test_every_node_has_a_served_help_page_with_each_input_and_output(server, our_nodes):
    problems = []
    for name, node in sorted(our_nodes.items()):
        folder = urllib.parse.quote(pack_folder(node["python_module"]))
        status, page = _fetch(f"{server}/extensions/{folder}/docs/{name}.md")
        if status != 200:
            problems.append(f"{name}: /extensions/{folder}/docs/{name}.md answered {status}")
            continue
        inputs = [i for kind in ("required", "optional") for i in node["input"].get(kind, {})]
        problems += [f"{name}: page never mentions input {i!r}" for i in inputs if i not in page]
        problems += page_problems(name, page, inputs, list(node["output_name"]))
    assert not problems, "\n".join(problems)


def test_every_help_page_belongs_to_a_node(our_nodes):
    pages = {p.stem for p in DOCS.glob("*.md")}
    assert pages - set(our_nodes) == set(), "pages of nodes the pack does not register"
    assert not [p for p in DOCS.iterdir() if p.is_dir()], "per-locale folders would shadow <NodeId>.md"


def test_pages_are_short_and_free_of_placeholders():
    for path in sorted(DOCS.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        assert 600 < len(text.encode()) < 8000, (path.name, len(text.encode()))
        assert not text.startswith("#"), f"{path.name}: the panel shows the node's name; start with the paragraph"
        assert "TODO" not in text and "NODES.md" not in text, path.name
        bare = [line for line in text.splitlines() if "<" in re.sub(r"`[^`]*`", "", line)]
        assert not bare, f"{path.name}: the panel drops <words> outside `code` as HTML tags: {bare}"


def test_frontend_fetches_custom_node_help_from_the_extension_docs_folder():
    """Pins the lookup the pages rely on to the frontend package ComfyUI serves (skipped without it)."""
    spec = importlib.util.find_spec("comfyui_frontend_package")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("comfyui_frontend_package is not installed in this Python")
    assets = os.path.join(list(spec.submodule_search_locations)[0], "static", "assets")
    for path in glob.glob(os.path.join(assets, "*.js")):
        with open(path, encoding="utf-8", errors="replace") as f:
            source = f.read()
        start = source.find("async fetchCustomNodeHelp(")
        if start >= 0:
            break
    else:
        pytest.fail(f"no fetchCustomNodeHelp in {assets}: the frontend's help lookup changed; check web/docs/")
    body = source[start:start + 800]
    assert re.search(r"`/extensions/\$\{\w+\}/docs/\$\{\w+\.name\}/\$\{\w+\}\.md`", body), body
    assert re.search(r"`/extensions/\$\{\w+\}/docs/\$\{\w+\.name\}\.md`", body), body
    # the module path's second part, custom_nodes.<folder> (frontends 1.3x quote strings with "", 1.4x with ``)
    folder_rule = r'extractCustomNodeName\(\w+\)\{[^}]*["`]custom_nodes["`]\?normalizePackId\((\w+)\[1\]\)'
    assert re.search(folder_rule, source), "the frontend no longer takes <folder> from custom_nodes.<folder>"


@pytest.mark.skipif(not available(), reason="needs Debian chromium and chromium-driver (installed by .ci/run)")
def test_the_frontend_help_panel_renders_a_page(server):
    """The frontend's own help store (the node library's "?" panel) fetches and renders EDLoRALoader's page."""
    with chromedriver() as open_browser:
        browser = open_browser()
        try:
            assert open_app(browser, server)
            shown = browser.js_async("""
                const done = arguments[arguments.length - 1];
                (async () => {
                  const pinia = document.querySelector('#vue-app').__vue_app__.config.globalProperties.$pinia;
                  const help = pinia._s.get('nodeHelp');
                  if (!help || !('renderedHelpHtml' in help)) {  // frontends that render help in a component
                    done({skip: 'this frontend renders node help in its panel component, not the nodeHelp store'});
                    return;
                  }
                  help.openHelp(pinia._s.get('nodeDef').nodeDefsByName['EDLoRALoader']);
                  await new Promise(r => setTimeout(r, 50));
                  for (let i = 0; i < 100 && help.isLoading; i++) await new Promise(r => setTimeout(r, 100));
                  done({error: help.error, base: help.baseUrl, html: help.renderedHelpHtml});
                })().catch(e => done({error: String(e)}));""")
        finally:
            browser.close()
    if "skip" in shown:  # the lookup itself is pinned by the bundle test and served by the HTTP test above
        pytest.skip(shown["skip"])
    assert shown["error"] is None, shown
    assert shown["base"] == "/extensions/ComfyUI-Mix-of-Show/docs/"
    assert "<h2>Inputs</h2>" in shown["html"] and "<code>strength_clip</code>" in shown["html"]
