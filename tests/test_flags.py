"""The command line reads its words as Docker's does (minidocker/flags.py).

Most tests parse with the engine's own parser (``cli.build_parser``) and
look at what it stored; the last ones run ``python -m minidocker`` to see
what a user sees: one line, Docker's exit code, the help.
"""

import os
import subprocess
import sys

import pytest

import minidocker
from minidocker import cli, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.course


def parse(*words):
    """Parse as ``main`` does: only the named command's parser is built."""
    return vars(cli.build_parser(cli.command_word(list(words))).parse_args(list(words)))


def test_run_stops_reading_options_at_the_command():
    parsed = parse("run", "--rm", "-e", "A=1", "busybox", "ls", "-l", "--rm", "--", "x")
    assert parsed["image"] == "busybox"
    assert parsed["command"] == ["ls", "-l", "--rm", "--", "x"]
    assert parsed["auto_remove"] is True and parsed["env"] == ["A=1"]
    assert parsed["handler"] is cli.command_run


def test_exec_leaves_the_command_its_options():
    parsed = parse("exec", "-it", "web", "sh", "-c", "echo -n hi")
    assert parsed["container"] == "web" and parsed["command"] == ["sh", "-c", "echo -n hi"]
    assert parsed["interactive"] and parsed["tty"]


def test_options_and_arguments_mix_elsewhere():
    parsed = parse("rm", "first", "-f", "second")
    assert parsed["containers"] == ["first", "second"] and parsed["force"] is True


def test_values_joined_glued_or_next():
    parsed = parse("run", "--name=web", "-p80:80", "-p=81:81", "-p", "82:82", "-eA=1",
                   "--env", "B=2", "busybox")
    assert parsed["name"] == "web"
    assert parsed["publish"] == ["80:80", "81:81", "82:82"]
    assert parsed["env"] == ["A=1", "B=2"]
    assert parsed["command"] == []


def test_grouped_switches_and_a_value_at_the_end_of_the_group():
    parsed = parse("run", "-itdp", "80:80", "busybox", "sh")
    assert parsed["interactive"] and parsed["tty"] and parsed["detach"]
    assert parsed["publish"] == ["80:80"]


def test_switches_take_explicit_booleans_as_docker_flags_do():
    parsed = parse("run", "--rm=false", "-d=true", "--privileged=1", "busybox")
    assert parsed["auto_remove"] is False and parsed["detach"] is True
    assert parsed["privileged"] is True
    assert parse("commit", "--pause=false", "web")["pause"] is False
    assert parse("commit", "web")["pause"] is True


def test_repeated_options_collect_and_defaults_are_not_shared():
    first = parse("run", "-e", "A=1", "busybox")
    second = parse("run", "busybox")
    assert first["env"] == ["A=1"] and second["env"] == []
    assert second["tty"] is False and second["detach"] is False   # a switch not given is off


def test_numbers_and_a_lone_dash_are_values():
    assert parse("run", "--pids-limit", "-1", "busybox")["pids_limit"] == -1
    assert parse("import", "-", "scratch:1")["tarball"] == "-"


def test_optional_positionals():
    assert parse("import", "root.tar")["reference"] is None
    assert parse("import", "root.tar", "mine:1")["reference"] == "mine:1"
    assert parse("stats")["containers"] == []


def test_global_options_before_the_command():
    parsed = parse("--root", "/srv/engine", "--trace", "ps", "-a")
    assert parsed["root"] == "/srv/engine" and parsed["trace"] and parsed["all"]


def test_version_before_a_command_and_volume_after_run():
    # Docker's -v is --version before the command and --volume after run.
    assert parse("-v")["version"] and parse("--version")["version"]
    parsed = parse("run", "-v", "/a:/b", "busybox")
    assert parsed["volumes"] == ["/a:/b"] and not parsed["version"]
    result = subprocess.run([sys.executable, "-m", "minidocker", "--version"], cwd=REPO,
                            capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO))
    expected = f"minidocker version {minidocker.__version__}\n"
    assert (result.returncode, result.stdout, result.stderr) == (0, expected, "")


def test_groups_reach_the_parsers_of_the_commands_they_name():
    assert parse("image", "ls", "-q")["handler"] is cli.command_images
    parsed = parse("container", "run", "--rm", "busybox", "true")
    assert parsed["handler"] is cli.command_run and parsed["command"] == ["true"]


def test_only_the_named_command_is_built_but_every_name_is_known():
    parser = cli.build_parser("run")
    assert list(parser.commands.parsers) == ["run"]
    assert {"ps", "rm", "image", "network"} <= set(parser.commands.summaries)
    everything = cli.build_parser()
    assert set(everything.commands.parsers) == set(everything.commands.summaries)


@pytest.mark.parametrize("words,message", [
    (["run", "--no-such-flag", "busybox"], "unknown flag: --no-such-flag"),
    (["run", "--priv", "busybox"], "unknown flag: --priv"),       # no abbreviations
    (["run", "-Z", "busybox"], "unknown flag: -Z"),
    (["run", "--name"], "flag needs an argument: --name"),
    (["run", "--name", "-d", "busybox"], "flag needs an argument: --name"),
    (["run", "--pull", "sometimes", "busybox"],
     'invalid argument "sometimes" for "--pull" flag: must be one of missing, always, never'),
    (["run", "--pids-limit", "x", "busybox"],
     'invalid argument "x" for "--pids-limit" flag: not a whole number'),
    (["run", "-m", "lots", "busybox"], 'invalid argument "lots" for "-m" flag: invalid size'),
    (["run", "--rm=maybe", "busybox"],
     'invalid argument "maybe" for "--rm" flag: not a boolean (true or false)'),
    (["run"], '"minidocker run" requires at least 1 argument.'),
    (["rm"], '"minidocker rm" requires at least 1 argument.'),
    (["tag", "a"], '"minidocker tag" requires exactly 2 arguments.'),
    (["commit", "a", "b", "c"], '"minidocker commit" requires at least 1 and at most 2 arguments.'),
    (["top", "a", "b"], '"minidocker top" requires exactly 1 argument.'),
    (["ps", "stray"], '"minidocker ps" accepts no arguments.'),
    # Whole numbers in plain decimal: no other scripts' digits or spaces (Go's
    # ParseInt refuses them too), no underscores (pflag's base 0 would take 3_0).
    (["stop", "-t", "\u0663", "web"], 'invalid argument "\u0663" for "-t" flag: not a whole number'),
    (["stop", "-t", "3_0", "web"], 'invalid argument "3_0" for "-t" flag: not a whole number'),
    (["stop", "-t", " 3", "web"], 'invalid argument " 3" for "-t" flag: not a whole number'),
    # Beyond 64 bits was an OverflowError in stop's clock arithmetic.
    (["stop", "-t", "9" * 400, "web"], f'invalid argument "{"9" * 400}" for "-t" flag: '
                                       "value out of range"),
    (["stop", "-t", "-\u0663", "web"], "flag needs an argument: -t"),
    (["frobnicate"], "'frobnicate' is not a minidocker command"),
    (["image", "frobnicate"], "'frobnicate' is not a minidocker image command"),
])
def test_mistakes_are_one_line_and_exit_125(words, message):
    result = subprocess.run([sys.executable, "-m", "minidocker", *words], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 125, result
    assert result.stdout == ""
    first, see = result.stderr.splitlines()
    assert first.startswith(f"minidocker: {message}"), first
    assert see.startswith("See 'minidocker") and see.endswith(" --help'.")


def test_help_lists_usage_options_and_commands():
    result = subprocess.run([sys.executable, "-m", "minidocker", "run", "--help"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == "Usage:  minidocker run [OPTIONS] IMAGE [COMMAND...]"
    assert "Create and start a container" in lines
    assert any(line.split()[:2] == ["-e,", "--env"] for line in lines)
    assert any(line.split()[:1] == ["--rm"] for line in lines)
    top = subprocess.run([sys.executable, "-m", "minidocker", "--help"], cwd=REPO,
                         capture_output=True, text=True)
    assert top.returncode == 0 and "Commands:" in top.stdout
    assert any(line.split()[:1] == ["pull"] for line in top.stdout.splitlines())
    group = subprocess.run([sys.executable, "-m", "minidocker", "image"], cwd=REPO,
                           capture_output=True, text=True)
    assert group.returncode == 0
    assert group.stdout.splitlines()[0] == "Usage:  minidocker image COMMAND"


def test_a_later_definition_of_an_option_replaces_the_earlier_one():
    parser = flags.Parser(prog="demo", add_help=False)
    parser.add_argument("-t", "--time", type=int, default=10)
    parser.add_argument("-t", "--tag", action="append", default=[])
    parsed = vars(parser.parse_args(["-t", "x", "--time", "3"]))
    assert parsed == {"time": 3, "tag": ["x"]}


def test_redefining_a_lent_option_leaves_the_parent_as_it_was():
    parent = flags.Parser(prog="images", add_help=False)
    parent.add_argument("-q", "--quiet", action="store_true")
    child = flags.Parser(prog="image ls", add_help=False, parents=[parent])
    child.add_argument("-q", "--quick", action="store_true")
    assert vars(child.parse_args(["-q"])) == {"quiet": False, "quick": True}
    assert vars(child.parse_args(["--quiet"])) == {"quiet": True, "quick": False}
    assert vars(parent.parse_args(["-q"])) == {"quiet": True}
    assert parent.options[0].names == ["-q", "--quiet"]
