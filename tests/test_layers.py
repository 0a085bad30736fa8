"""The package layout holds: each module imports only its own layer and those torchwin.LAYERS lets it.

Every module under scripts/torchwin is parsed with `ast`, so imports inside functions (the code
imports lazily a lot) count as much as those at the top. The check itself is tested on made-up
modules that break the rule, so a broken check cannot pass silently.
"""

import ast
from pathlib import Path

import pytest
import torchwin

PACKAGE = Path(torchwin.__file__).resolve().parent
LAYER_OF = {top: layer for layer, (tops, _) in torchwin.LAYERS.items() for top in tops}
MAY_IMPORT = {layer: {layer, *allowed} for layer, (_, allowed) in torchwin.LAYERS.items()}
# A module over this many lines, or a class over CLASS_LINES without a reason in its docstring,
# is a sign it holds more than one job.
MODULE_LINES = 500
CLASS_LINES = 120
CLASS_REASON = "Over the ~120 lines"


def module_sources(root=PACKAGE):
    """{dotted module name: source} of every .py file in the package."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path.read_text(encoding="utf-8")
    return out


def top_of(module):
    """The entry of LAYERS a dotted module belongs to: torchwin.channel.store -> channel."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def imported_modules(module, source, known):
    """(line, module) for every torchwin module `module` imports, wherever the import statement is."""
    package = module if module in known and _is_package(module, known) else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "torchwin"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "torchwin":
                continue
            for alias in node.names:
                # `from torchwin.ci import gha` imports the module torchwin.ci.gha.
                sub = base + "." + alias.name
                found.append((node.lineno, sub if sub in known else base))
    return found


def _is_package(module, known):
    return any(other.startswith(module + ".") for other in known)


def violations(sources):
    """One line per import of a layer the importer may not import, and per module no layer claims."""
    known = set(sources)
    problems = []
    for module, source in sorted(sources.items()):
        top = top_of(module)
        if top is None:
            continue  # torchwin itself: the version and LAYERS, importable from everywhere
        if top not in LAYER_OF:
            problems.append(f"{module}: in no layer of torchwin.LAYERS")
            continue
        layer = LAYER_OF[top]
        for line, target in imported_modules(module, source, known):
            other = LAYER_OF.get(top_of(target))
            if other is not None and other not in MAY_IMPORT[layer]:
                allowed = ", ".join(sorted(MAY_IMPORT[layer]))
                problems.append(f"{module}:{line} imports {target}: layer {layer!r} may not import layer "
                                f"{other!r} (torchwin.LAYERS lets it import: {allowed})")
    return problems


def test_no_module_imports_a_later_layer():
    sources = module_sources()
    assert len(sources) > 40  # the whole package was read
    assert violations(sources) == []


def test_every_top_level_module_and_package_is_in_a_layer():
    tops = {top_of(m) for m in module_sources()} - {None}
    assert tops == set(LAYER_OF), "LAYERS and the package's folders disagree"


def cycle(may_import):
    """A chain of allowed imports that comes back to its start (a list of layers), or None."""
    done, path = set(), []

    def visit(layer):
        if layer in path:
            return path[path.index(layer):] + [layer]
        if layer in done:
            return None
        path.append(layer)
        for other in sorted(may_import[layer] - {layer}):
            found = visit(other)
            if found:
                return found
        path.pop()
        done.add(layer)
        return None

    for layer in may_import:
        found = visit(layer)
        if found:
            return found
    return None


def test_the_layers_are_layers():
    """Each layer names only layers that exist, and no chain of allowed imports comes back to its
    start: otherwise two parts could lean on each other and neither be understood alone."""
    for layer, (_, allowed) in torchwin.LAYERS.items():
        assert set(allowed) <= set(torchwin.LAYERS), layer
    assert cycle(MAY_IMPORT) is None


def test_the_cycle_check_finds_a_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_pipeline_order_holds():
    """channel must not import build, build not publish, nothing but the command line ci."""
    assert "build" not in MAY_IMPORT["channel"]
    assert "publish" not in MAY_IMPORT["build"] and "publish" not in MAY_IMPORT["channel"]
    assert [layer for layer, allowed in MAY_IMPORT.items() if "ci" in allowed] == ["ci", "command line"]
    assert "channel" not in MAY_IMPORT["doctor"] and "build" not in MAY_IMPORT["doctor"]  # usable on its own


BASE = {
    "torchwin": '"""root"""\n',
    "torchwin.errors": '"""errors"""\n',
    "torchwin.build": '"""build"""\nfrom torchwin.channel import store\n',
    "torchwin.channel": '"""channel"""\n',
    "torchwin.channel.config": '"""config"""\n',
    "torchwin.ci": '"""ci"""\n',
    "torchwin.ci.matrix": '"""matrix"""\n',
}


@pytest.mark.parametrize("source", [
    "def add():\n    from torchwin import build\n",  # lazily, inside a function
    "from torchwin.build import run\n",
    "import torchwin.ci.matrix\n",
    "from torchwin.ci import matrix\n",
    "from ..ci import matrix\n",  # relative
    "from .. import build\n",
    "class Store:\n    def add(self):\n        import torchwin.build as b\n        return b\n",
])
def test_the_check_fails_a_lower_layer_that_imports_a_higher_one(source):
    sources = dict(BASE, **{"torchwin.channel.store": '"""store"""\n' + source})
    problems = violations(sources)
    assert len(problems) == 1, problems
    assert problems[0].startswith("torchwin.channel.store:")
    assert "layer 'channel' may not import layer" in problems[0]
    assert "lets it import: base, channel, recipes" in problems[0]


@pytest.mark.parametrize("source", [
    "from torchwin.channel import config\n",  # its own layer
    "from . import config\n",
    "from torchwin.errors import UserError\n",  # a lower one
    "import torchwin\n",
    "from torchwin import __version__\n",
    "import json\n",
])
def test_the_check_passes_imports_of_the_same_or_a_lower_layer(source):
    sources = dict(BASE, **{"torchwin.channel.store": '"""store"""\n' + source})
    assert violations(sources) == []


def test_the_check_fails_a_module_outside_every_layer():
    sources = dict(BASE, **{"torchwin.stray": '"""stray"""\n'})
    assert violations(sources) == ["torchwin.stray: in no layer of torchwin.LAYERS"]


def test_each_subpackage_says_its_job_and_what_it_may_import():
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert "May import" in doc or "may import" in doc, f"{init}: its docstring says not what it may import"
        assert len(doc.splitlines()) >= 3, f"{init}: its docstring does not say its job"


def test_no_module_or_class_is_too_long():
    long = []
    for module, source in module_sources().items():
        lines = len(source.splitlines())
        if lines > MODULE_LINES:
            long.append(f"{module}: {lines} lines (limit {MODULE_LINES}): split it along a seam")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > CLASS_LINES:
                if CLASS_REASON not in (ast.get_docstring(node) or ""):
                    long.append(f"{module}.{node.name}: {node.end_lineno - node.lineno + 1} lines "
                                f"(limit {CLASS_LINES}) and no '{CLASS_REASON} ...' reason in its docstring")
    assert long == []


def import_graph(sources):
    """{module: {torchwin modules it imports}}, function-level imports included."""
    known = set(sources)
    graph = {}
    for module, source in sources.items():
        targets = {target for _, target in imported_modules(module, source, known)}
        graph[module] = {t for t in targets if t in known and t != module and top_of(t) is not None}
    return graph


def import_circles(sources):
    """One line per circle of modules that import each other (directly or around a longer loop),
    each circle named once, by its members in the order the imports go."""
    graph = import_graph(sources)
    cycles = {}
    for start in sorted(graph):
        found = cycle(_rooted(graph, start))
        if found:
            members = found[:-1]
            turn = members.index(min(members))
            members = members[turn:] + members[:turn]
            cycles[tuple(members)] = " -> ".join(members + [members[0]])
    return sorted(cycles.values())


def _rooted(graph, start):
    """The graph as cycle() takes it (each module listing itself), start first so its loop is found."""
    ordered = {start: graph[start] | {start}}
    ordered.update({m: graph[m] | {m} for m in graph if m != start})
    return ordered


def test_no_two_modules_import_each_other():
    """Not even lazily, around a loop: a circle means neither module can be read (or moved) alone;
    the fact they share belongs in a module below both."""
    assert import_circles(module_sources()) == []


@pytest.mark.parametrize("sources, circle", [
    ({"torchwin.build": "def f():\n    from torchwin import try_it\n",
      "torchwin.try_it": "from torchwin.build import channel_labels\n"},
     "torchwin.build -> torchwin.try_it -> torchwin.build"),
    ({"torchwin.ci.downloads": "from torchwin.ci.fetch import fetch\n",
      "torchwin.ci.fetch": "from torchwin.ci.downloads_check import x\n",
      "torchwin.ci.downloads_check": "from torchwin.ci import downloads\n", "torchwin.ci": ""},
     "torchwin.ci.downloads -> torchwin.ci.fetch -> torchwin.ci.downloads_check -> torchwin.ci.downloads"),
])
def test_the_circle_check_finds_a_circle(sources, circle):
    assert import_circles(dict(sources, torchwin="")) == [circle]


def test_the_circle_check_passes_a_chain():
    sources = {"torchwin": "", "torchwin.a": "from torchwin import b\n", "torchwin.b": "from torchwin import c\n",
               "torchwin.c": "import json\n"}
    assert import_circles(sources) == []


def test_build_string_parsing_has_one_home_below_the_page():
    """build and try_it read channel records; they must not go through the page (the HTML) for it."""
    sources = module_sources()
    graph = import_graph(sources)
    # Only what writes or serves the page imports it.
    assert {m for m, targets in graph.items() if "torchwin.channel.page" in targets} == {
        "torchwin.channel.command", "torchwin.channel.serve"}
    defining = sorted(m for m, source in sources.items()
                      for node in ast.parse(source).body
                      if isinstance(node, ast.FunctionDef) and node.name in ("python_of", "compute_of"))
    assert defining == ["torchwin.channel.build_string", "torchwin.channel.build_string"]
