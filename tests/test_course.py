"""The course checks itself: every chapter's "Check your work" must come true.

Each chapter's README holds, after the marker line ``<!-- check-your-work -->``,
a ``console`` block of commands (``$ ...``) and the output they must print
(chapters/README.md describes the format).  The tests here run those commands
on this machine, as a student would, and compare: a chapter that promises
output the engine no longer prints fails here, not in a classroom.

Also here: the chapters keep the shape of DESIGN.md §8, every ``:pyobject:``
a chapter quotes exists in the package, the docs build with warnings as
errors, and ``minidocker demo`` walks the whole course.
"""

import ast
import doctest
import os
import re
import subprocess
import sys
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHAPTERS = os.path.join(REPO, "chapters")
MARKER = "<!-- check-your-work -->"

#: The chapters the course promises, in order; more found on disk are added.
PLANNED = ("00-introduction", "01-namespace", "02-cgroup", "03-rootfs", "04-image",
           "05-network", "06-logging", "07-commit", "08-outlook")

#: DESIGN.md §8: the sections every chapter has, in this order.
SECTIONS = ("Goal", "The mechanism", "The code", "Try it", "Check your work",
            "What can go wrong", "Exercises", "Further reading")

pytestmark = pytest.mark.course


def chapter_names():
    found = {name for name in os.listdir(CHAPTERS) if re.match(r"^\d\d-", name)} \
        if os.path.isdir(CHAPTERS) else set()
    return sorted(found | set(PLANNED))


def chapter_marks(name):
    """``pytest -m ch3`` selects chapter 3's checks, ``-m course`` all of them."""
    number = int(name[:2])
    return [getattr(pytest.mark, f"ch{number}")] if 1 <= number <= 7 else []


def chapter_parameters():
    return [pytest.param(name, marks=chapter_marks(name), id=name) for name in chapter_names()]


def readme(name):
    """Return the chapter's README text, or skip: the chapter is not written yet."""
    path = os.path.join(CHAPTERS, name, "README.md")
    if not os.path.isfile(path):
        pytest.skip(f"chapters/{name}/README.md does not exist yet")
    with open(path) as handle:
        return handle.read()


# -- reading a chapter -------------------------------------------------------

class FormatError(Exception):
    """A check block that does not follow the format of chapters/README.md."""


def check_blocks(text):
    """Return the chapter's check blocks, each a list of ``(command, expected)``."""
    blocks = []
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        rest = iter(lines[index + 1:])
        fence = next((candidate for candidate in rest if candidate.strip()), "")
        if fence.strip() != "```console":
            raise FormatError(f"line {index + 1}: {MARKER} must be followed by a ```console block")
        body = []
        for candidate in rest:
            if candidate.strip() == "```":
                break
            body.append(candidate)
        else:
            raise FormatError(f"line {index + 1}: the check block is never closed")
        blocks.append(split_commands(body, index + 1))
    return blocks


def split_commands(body, where):
    """Split a console block into ``(command, expected output)`` pairs."""
    pairs = []
    for line in body:
        if line.startswith("$ "):
            pairs.append([line[2:], []])
        elif not pairs:
            raise FormatError(f"line {where}: the block must start with a command ($ ...)")
        else:
            pairs[-1][1].append(line)
    return [(command, "\n".join(expected) + "\n" if expected else "") for command, expected in pairs]


def headings(text):
    """Return the ``##`` headings of a Markdown text, outside code blocks."""
    found = []
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("## "):
            found.append(line[3:].strip())
    return found


# -- running a check -----------------------------------------------------------

OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def matches(expected, output):
    """Compare as doctest does with ELLIPSIS: ``...`` matches any text."""
    return doctest.OutputChecker().check_output(expected, output, OPTIONS)


def difference(expected, output):
    example = doctest.Example("command", expected)
    return doctest.OutputChecker().output_difference(example, output, OPTIONS)


def course_tools(directory):
    """Make ``python`` and ``minidocker`` commands for the chapters' shells."""
    for name, tail in (("python", '"$@"'), ("minidocker", '-m minidocker "$@"')):
        path = os.path.join(directory, name)
        with open(path, "w") as script:
            script.write(f'#!/bin/sh\nexec {sys.executable} {tail}\n')
        os.chmod(path, 0o755)


def run_check(command, engine, tools, busybox_tar, timeout=180):
    """Run one chapter command as a student would; return (status, output)."""
    environment = engine.environment({
        "PATH": tools + os.pathsep + os.environ.get("PATH", ""),
        "PYTHONUNBUFFERED": "1",  # keep stdout and stderr in the order they were written
        "BUSYBOX_TAR": busybox_tar,
    })
    result = subprocess.run(["bash", "-c", "set -o pipefail\n" + command], cwd=REPO,
                            env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, timeout=timeout)
    return result.returncode, result.stdout


def run_block(block, engine, busybox_tar):
    """Run a check block's commands in order; return the list of failures."""
    failures = []
    with tempfile.TemporaryDirectory(prefix="minidocker-test-tools-") as tools:
        course_tools(tools)
        for command, expected in block:
            status, output = run_check(command, engine, tools, busybox_tar)
            if status != 0:
                failures.append(f"$ {command}\nexited with status {status}; it printed:\n{output}")
            elif not matches(expected, output):
                failures.append(f"$ {command}\n{difference(expected, output)}")
    return failures


@pytest.fixture
def course_engine(busybox, busybox_tar):
    """An engine root holding the busybox image, as every check block expects."""
    return busybox


# -- the tests of the machinery (each can fail) ----------------------------------

def test_check_blocks_are_read_as_commands_and_expected_output():
    text = ("# A chapter\n\n" + MARKER + "\n```console\n$ echo one\none\n$ true\n"
            "$ printf 'a\\nb\\n'\na\n...\n```\n\n```console\n$ not checked\n```\n")
    assert check_blocks(text) == [[("echo one", "one\n"), ("true", ""),
                                   ("printf 'a\\nb\\n'", "a\n...\n")]]
    with pytest.raises(FormatError):
        check_blocks(MARKER + "\n```text\n$ echo\n```\n")
    with pytest.raises(FormatError):
        check_blocks(MARKER + "\n```console\noutput before any command\n```\n")


def test_expected_output_is_compared_with_ellipsis_and_nothing_else():
    assert matches("PID 1\n...\n", "PID 1\nanything\nat all\n")
    assert matches("a   b\n", "a b\n")
    assert not matches("PID 1\n", "PID 2\n")
    assert not matches("", "unexpected output\n")


def test_a_chapter_promising_the_wrong_output_fails(engine, busybox_tar):
    failures = run_block([("echo hello", "goodbye\n"), ("false", ""), ("echo ok", "ok\n")],
                         engine, busybox_tar)
    assert len(failures) == 2
    assert "goodbye" in failures[0] and "exited with status 1" in failures[1]


# -- the chapters ------------------------------------------------------------

@pytest.mark.parametrize("name", chapter_parameters())
def test_check_your_work(name, request):
    """Run the chapter's check block; every command prints what the chapter says."""
    blocks = check_blocks(readme(name))
    if not blocks:
        pytest.skip(f"chapters/{name}/README.md has no {MARKER} block yet")
    engine = request.getfixturevalue("course_engine")
    busybox_tar = request.getfixturevalue("busybox_tar")
    failures = []
    for block in blocks:
        failures += run_block(block, engine, busybox_tar)
    assert not failures, f"chapters/{name}: Check your work does not come true:\n\n" + \
        "\n\n".join(failures)


@pytest.mark.parametrize("name", chapter_parameters())
def test_chapter_has_the_course_shape(name):
    text = readme(name)
    assert text.startswith("# "), f"chapters/{name}/README.md must start with a # title"
    found = headings(text)
    missing = [section for section in SECTIONS
               if not any(heading.lower().startswith(section.lower()) for heading in found)]
    assert not missing, f"chapters/{name}/README.md lacks the sections {missing} (DESIGN.md §8)"
    order = [next(i for i, heading in enumerate(found) if heading.lower().startswith(section.lower()))
             for section in SECTIONS]
    assert order == sorted(order), f"chapters/{name}: sections out of order: {found}"
    assert check_blocks(text), f"chapters/{name}/README.md has no {MARKER} block"
    assert os.path.isfile(os.path.join(CHAPTERS, name, "step.py")), \
        f"chapters/{name} has no runnable step.py"


QUOTE = re.compile(r"```\{literalinclude\}\s+(\S+)\s*\n((?::[\w-]+:.*\n)*)")


@pytest.mark.parametrize("name", chapter_parameters())
def test_quoted_code_exists(name):
    """Every ``literalinclude`` names a real file, and every ``:pyobject:`` a real object.

    The docs build would catch it too, but this runs in a blink and names
    the chapter.
    """
    text = readme(name)
    problems = []
    for path, options in QUOTE.findall(text):
        target = os.path.normpath(os.path.join(CHAPTERS, name, path))
        if not os.path.isfile(target):
            problems.append(f"{path}: no such file")
            continue
        wanted = re.search(r"^:pyobject:\s*(\S+)", options, re.MULTILINE)
        if wanted and wanted.group(1) not in python_objects(target):
            problems.append(f"{path}: no {wanted.group(1)}")
    assert not problems, f"chapters/{name} quotes code that is not there: {problems}"


def python_objects(path):
    """Return the dotted names of the classes and functions a module defines."""
    with open(path) as handle:
        tree = ast.parse(handle.read())
    names = set()

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(prefix + child.name)
                if isinstance(child, ast.ClassDef):
                    visit(child, prefix + child.name + ".")
    visit(tree, "")
    return names


# -- the docs and the demo ---------------------------------------------------------

def test_docs_build_without_a_warning(tmp_path):
    """``sphinx-build -W``: a warning anywhere (a bad docstring, a lost quote) fails."""
    for module in ("sphinx", "myst_parser"):
        try:
            __import__(module)
        except ImportError:
            pytest.skip(f"{module} is not installed: pip install -e '.[docs]'")
    result = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q",
                             "-b", "html", "-d", str(tmp_path / "doctrees"), "docs",
                             str(tmp_path / "html")],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"the docs build failed:\n{result.stderr[-6000:]}"
    with open(tmp_path / "html" / "chapters" / "03-rootfs.html") as page:
        # The chapter's quote is the package's code, pulled at build time.
        assert "did not go on top of" in page.read()


def test_demo_walks_the_course_and_leaves_nothing(engine):
    """``minidocker demo`` runs every chapter's scene and removes its engine root."""
    before = set(os.listdir("/tmp"))
    result = engine.run("demo", timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    for chapter in ("Chapter 1", "Chapter 3", "Chapter 4"):
        assert chapter in result.stdout
    assert "hello from a container" in result.stdout
    left = [name for name in set(os.listdir("/tmp")) - before if name.startswith("minidocker-demo")]
    assert not left, f"the demo left {left} behind"
