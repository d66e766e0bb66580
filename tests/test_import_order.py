"""The course's one structural rule: a chapter never reaches ahead.

DESIGN.md §2: "A chapter's module imports only modules of earlier chapters
(plus host.py and the small shared helpers). container.py and cli.py sit on
top."  A student reading chapter 3 must never need chapter 5 to understand
it.  These tests read every import statement with :mod:`ast` (lazy imports
inside functions included) and check the rule for the package and for each
chapter's runnable ``step.py``.
"""

import ast
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "minidocker")
CHAPTERS = os.path.join(REPO, "chapters")

#: The chapter that teaches each module.  0 is the foundation every chapter
#: may use; ``TOP`` modules compose the chapters and may import anything.
TOP = 100
CHAPTER_OF = {
    "__init__": 0, "host": 0,
    "namespace": 1,
    "cgroup": 2,
    "rootfs": 3,
    "image": 4, "registry": 4, "http_client": 4,
    "network": 5,
    "logs": 6, "volume": 6,
    "commit": 7,
    "container": TOP, "flags": TOP, "cli": TOP, "__main__": TOP, "demo": TOP,
}

pytestmark = pytest.mark.course


def imported_modules(source):
    """Return the names of the ``minidocker`` modules that ``source`` imports.

    Every form counts, wherever it appears (a function-level lazy import
    is still a dependency): ``import minidocker.image``, ``from minidocker
    import image``, ``from minidocker.image import Store``, and the
    relative ``from . import image`` / ``from .image import Store``.
    """
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "minidocker" and len(parts) > 1:
                    found.add(parts[1])
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 0 and not module.startswith("minidocker"):
                continue
            parts = module.split(".") if module else []
            if node.level == 0:
                parts = parts[1:]
            if parts:
                found.add(parts[0])
            else:  # the package's own attributes (__version__) are no modules
                found.update(alias.name for alias in node.names if not alias.name.startswith("__"))
    return found


def violations(chapter, imports):
    """Return the imports that break the rule for code of ``chapter``."""
    broken = []
    for name in sorted(imports):
        if name not in CHAPTER_OF:
            broken.append(f"{name} (a module with no chapter: add it to CHAPTER_OF)")
        elif CHAPTER_OF[name] > chapter:
            where = "the top" if CHAPTER_OF[name] == TOP else f"chapter {CHAPTER_OF[name]}"
            broken.append(f"{name} ({where})")
    return broken


def package_modules():
    return sorted(name[:-3] for name in os.listdir(PACKAGE) if name.endswith(".py"))


def chapter_steps():
    steps = []
    for name in sorted(os.listdir(CHAPTERS)) if os.path.isdir(CHAPTERS) else []:
        match = re.match(r"^(\d\d)-", name)
        path = os.path.join(CHAPTERS, name, "step.py")
        if match and os.path.isfile(path):
            steps.append((int(match.group(1)), path))
    return steps


def read(path):
    with open(path) as handle:
        return handle.read()


def test_the_parser_sees_every_form_of_import():
    source = (
        "import os\n"
        "import minidocker.image\n"
        "from minidocker import host, rootfs\n"
        "from minidocker.network import connect\n"
        "from . import logs\n"
        "from .commit import build\n"
        "def later():\n"
        "    from minidocker import cgroup\n"
    )
    assert imported_modules(source) == {"image", "host", "rootfs", "network", "logs",
                                        "commit", "cgroup"}


def test_the_rule_catches_a_chapter_reaching_ahead():
    # rootfs (3) importing network (5) and an unmapped module must both be caught.
    assert violations(3, {"host", "namespace", "network", "mystery"}) == [
        "mystery (a module with no chapter: add it to CHAPTER_OF)", "network (chapter 5)"]
    assert violations(3, {"host", "namespace", "cgroup"}) == []


@pytest.mark.parametrize("module", package_modules())
def test_module_imports_only_earlier_chapters(module):
    if module not in CHAPTER_OF:
        pytest.fail(f"minidocker/{module}.py belongs to no chapter: add it to CHAPTER_OF "
                    "in tests/test_import_order.py (and to the course map)")
    chapter = CHAPTER_OF[module]
    imports = imported_modules(read(os.path.join(PACKAGE, f"{module}.py"))) - {module}
    broken = violations(chapter, imports)
    assert not broken, f"minidocker/{module}.py (chapter {chapter}) imports " + ", ".join(broken)


@pytest.mark.parametrize("chapter,path", chapter_steps(),
                         ids=[os.path.basename(os.path.dirname(path)) for _, path in chapter_steps()])
def test_chapter_step_uses_only_chapters_up_to_its_own(chapter, path):
    broken = violations(chapter, imported_modules(read(path)))
    assert not broken, f"{os.path.relpath(path, REPO)} (chapter {chapter}) imports " + \
        ", ".join(broken)
