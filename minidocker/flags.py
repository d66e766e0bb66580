"""Reading a command line the way Docker's does.

Docker's command line (``spf13/pflag`` under ``cobra``) follows a few rules,
and this module follows them too:

* options and arguments may come in any order (``rm web -f``), until
  ``--``, after which every word is an argument;
* a command that runs a command (``run``, ``create``, ``exec``) stops
  reading options at that command: in ``run busybox ls -l``, ``-l`` is
  ``ls``'s;
* an option's value follows it (``--name web``) or is joined to it with
  ``=`` (``--name=web``); a one-letter option's value may also be glued on
  (``-p80:80``), and one-letter switches may be grouped (``-it``);
* a switch may be set either way explicitly: ``--rm=false``;
* options are spelled out: ``--priv`` is not ``--privileged``.

Python's ``argparse`` does most of this, and almost a tenth of a
container's start went to it: importing it, building the parser (every
option it is told about makes a help formatter, and the first ones compile
regular expressions) and matching the words against patterns.  This module
does the same job with a loop over the words.  Its interface is the part of
argparse's the command line uses (``add_argument``, ``add_subparsers``,
``set_defaults``, ``parse_args``), so the commands read as before.
"""

import sys

from minidocker import host

#: ``nargs=REMAINDER``: the argument takes every word that is left.
REMAINDER = "..."

#: The spellings Go's strconv.ParseBool accepts, for ``--rm=false``.
BOOLEANS = {"1": True, "t": True, "T": True, "true": True, "TRUE": True, "True": True,
            "0": False, "f": False, "F": False, "false": False, "FALSE": False, "False": False}


class InvalidValue(Exception):
    """Raised by a ``type`` function for a value it cannot take."""


class Namespace:
    """What was parsed: one attribute per option and argument."""

    def __init__(self, **values):
        self.__dict__.update(values)

    def __repr__(self):
        return f"Namespace({', '.join(f'{name}={value!r}' for name, value in vars(self).items())})"


class Argument:
    """One option (``-e, --env``) or positional argument (``IMAGE``)."""

    def __init__(self, names, action="store", dest=None, default=None, help=None,
                 metavar=None, nargs=None, type=None, choices=None):
        if action not in ("store", "store_true", "append", "help"):
            raise ValueError(f"{names}: this parser has no action {action!r}")
        self.names = names          # the option's spellings; empty for a positional
        self.action = action        # store, store_true, append or help
        self.is_option = bool(names)
        if dest is None:
            # argparse's rule: the first long name, dashes become underscores.
            long_names = [name for name in names if name.startswith("--")]
            dest = (long_names or names)[0].lstrip("-").replace("-", "_") if names else None
        self.dest = dest
        if default is None:
            default = {"store_true": False, "append": []}.get(action)
        self.default = default
        self.help = help
        self.metavar = metavar or (dest.upper() if names else dest)
        self.nargs = nargs
        self.type = type
        self.choices = choices

    @property
    def takes_value(self):
        """Whether the option needs a value (``--name web``): all but switches and help."""
        return self.is_option and self.action in ("store", "append")

    def invocation(self):
        """``-d, --detach`` or ``--name NAME`` or ``IMAGE``, as the help shows it."""
        if not self.is_option:
            return self.metavar
        names = ", ".join(self.names)
        return f"{names} {self.metavar}" if self.takes_value else names


class Parser:
    """The options and arguments of one command, and how to read them.

    ``parents`` lends this parser the arguments and defaults of others
    (``image ls`` reads what ``images`` reads).
    """

    built = True    # see Commands

    def __init__(self, prog=None, description=None, add_help=True, parents=(), help=None):
        self.prog = prog or "minidocker"
        self.description = description or help
        self.summary = help         # the one line the parent command's help shows
        self.arguments = []
        self.defaults = {}
        self.commands = None        # a Commands, when this parser has subcommands
        if add_help:
            self.add_argument("-h", "--help", action="help", help="show this help and exit")
        if parents:
            import copy

            for parent in parents:
                for argument in parent.arguments:
                    # A copy: redefining an option here must not change it there.
                    self._add(copy.copy(argument))
                self.defaults.update(parent.defaults)

    # -- describing ------------------------------------------------------

    def add_argument(self, *names, **settings):
        """Add an option (names start with ``-``) or a positional argument (one name)."""
        if names[0].startswith("-"):
            argument = Argument(list(names), **settings)
        else:
            argument = Argument([], dest=names[0], **settings)
        self._add(argument)
        return argument

    def _add(self, argument):
        # A later definition of the same spelling wins (as argparse's
        # conflict_handler="resolve"): a parent's option can be redefined.
        taken = set(argument.names)
        for old in [old for old in self.arguments if taken & set(old.names)]:
            old.names = [name for name in old.names if name not in taken]
            if not old.names:
                self.arguments.remove(old)
        self.arguments.append(argument)

    def add_subparsers(self, dest, metavar="COMMAND", parser_class=None, only=None):
        """Give this parser subcommands; the word that names one is stored in ``dest``.

        With ``only``, just that command's parser is built: see :class:`Commands`.
        """
        self.commands = Commands(self, dest, metavar, parser_class or type(self), only)
        return self.commands

    def set_defaults(self, **values):
        """Values to store whatever the command line says (``handler=command_run``)."""
        self.defaults.update(values)

    def get_default(self, name):
        if name in self.defaults:
            return self.defaults[name]
        return next((argument.default for argument in self.arguments if argument.dest == name),
                    None)

    @property
    def options(self):
        return [argument for argument in self.arguments if argument.is_option]

    @property
    def positionals(self):
        return [argument for argument in self.arguments if not argument.is_option]

    # -- reading ---------------------------------------------------------

    def parse_args(self, words=None):
        """Read ``words`` (``sys.argv[1:]``) into a :class:`Namespace`."""
        values = {}
        self._read(list(sys.argv[1:] if words is None else words), values)
        return Namespace(**values)

    def _read(self, words, values):
        for argument in self.arguments:
            if argument.action != "help":
                default = argument.default
                values[argument.dest] = list(default) if isinstance(default, list) else default
        values.update(self.defaults)
        if self.commands is not None:
            values[self.commands.dest] = None
        options = {name: argument for argument in self.options for name in argument.names}
        positionals = self.positionals
        remainder = next((index for index, argument in enumerate(positionals)
                          if argument.nargs == REMAINDER), None)
        found = []
        index = 0
        while index < len(words):
            word = words[index]
            index += 1
            if word == "--":
                found.extend(words[index:])
                break
            if looks_like_option(word):
                index = self._read_option(word, words, index, options, values)
                continue
            found.append(word)
            if self.commands is not None:
                # The command word: what follows is the subcommand's to read.
                values[self.commands.dest] = word
                self.commands.parser(word)._read(words[index:], values)
                return
            if remainder is not None and len(found) == remainder:
                # Docker's run and exec: the rest is the command and its own options.
                found.extend(words[index:])
                break
        self._assign(found, positionals, values)

    def _read_option(self, word, words, index, options, values):
        """Read one option word (and its value); return the index of the next word."""
        if word.startswith("--"):
            name, equals, value = word.partition("=")
            argument = self._option(options, name)
            if argument.takes_value and not equals:
                value, index = self._value_after(name, words, index)
            self._store(argument, name, value if equals or argument.takes_value else None, values)
            return index
        letters = word[1:]
        while letters:
            name, letters = "-" + letters[0], letters[1:]
            argument = self._option(options, name)
            if argument.takes_value or letters.startswith("="):
                # The rest of the word is the value (-p80:80, -p=80:80, -d=false),
                # or else the next word is.
                if letters:
                    value = letters.removeprefix("=")
                else:
                    value, index = self._value_after(name, words, index)
                self._store(argument, name, value, values)
                return index
            self._store(argument, name, None, values)
        return index

    def _option(self, options, name):
        if name not in options:
            self.error(f"unknown flag: {name}")
        return options[name]

    def _value_after(self, name, words, index):
        # Like argparse, and unlike pflag, a word that looks like an option
        # is not taken as a value: ``--name -d`` is a mistake, not a name.
        if index >= len(words) or looks_like_option(words[index]):
            self.error(f"flag needs an argument: {name}")
        return words[index], index + 1

    def _store(self, argument, name, value, values):
        """Store what one option says; ``value`` is None for a switch given bare."""
        if argument.action == "help":
            self.print_help()
            sys.exit(0)
        if argument.action == "store_true":
            # A switch may be set either way explicitly, as Docker's
            # boolean flags may: --rm=false, -d=true.
            if value is not None and value not in BOOLEANS:
                self.error(f'invalid argument "{value}" for "{name}" flag: '
                           f"not a boolean (true or false)")
            values[argument.dest] = True if value is None else BOOLEANS[value]
        elif argument.action == "append":
            values[argument.dest].append(self._convert(argument, name, value))
        else:
            values[argument.dest] = self._convert(argument, name, value)

    def _convert(self, argument, name, value):
        what = f'invalid argument "{value}" for "{name}" flag'
        if argument.choices is not None and value not in argument.choices:
            self.error(f"{what}: must be one of {', '.join(argument.choices)}")
        if argument.type is None:
            return value
        if argument.type is int and not is_whole_number(value):
            # int() also takes " 3" and other scripts' digits, which Go's
            # ParseInt refuses (pflag's base 0 takes 0x10 and 3_0: not here).
            self.error(f"{what}: not a whole number")
        if argument.type is int and not -2**63 <= int(value) < 2**63:
            self.error(f"{what}: value out of range")   # pflag's int is 64 bits
        try:
            return argument.type(value)
        except InvalidValue as error:
            self.error(f"{what}: {error}")
        except ValueError:
            self.error(f"{what}: not a whole number" if argument.type is int else what)

    def _assign(self, found, positionals, values):
        """Share the argument words out among the positional arguments, in order."""
        least = [0 if argument.nargs in ("?", "*", REMAINDER) else 1 for argument in positionals]
        most = [1 if argument.nargs in (None, "?") else None for argument in positionals]
        if len(found) < sum(least) or (None not in most and len(found) > sum(most)):
            self.error(self._count_complaint(sum(least), None if None in most else sum(most)))
        for number, argument in enumerate(positionals):
            spare = len(found) - sum(least[number + 1:])
            if argument.nargs is None:
                values[argument.dest], found = found[0], found[1:]
            elif argument.nargs == "?":
                if spare > 0:
                    values[argument.dest], found = found[0], found[1:]
            else:
                values[argument.dest], found = found[:spare], found[spare:]

    def _count_complaint(self, least, most):
        """Docker's words: '"minidocker rm" requires at least 1 argument.'"""
        def count(number):
            return f"{number} argument{'' if number == 1 else 's'}"
        if most == 0:
            return f'"{self.prog}" accepts no arguments.'
        if least == most:
            return f'"{self.prog}" requires exactly {count(least)}.'
        if most is None:
            return f'"{self.prog}" requires at least {count(least)}.'
        if least == 0:
            return f'"{self.prog}" requires at most {count(most)}.'
        return f'"{self.prog}" requires at least {least} and at most {count(most)}.'

    def error(self, message):
        """Report a mistake on the command line and end the process (exit 2, as argparse)."""
        sys.stderr.write(f"{self.prog}: {message}\n")
        sys.exit(2)

    # -- the help ------------------------------------------------------------

    def usage(self):
        """``minidocker run [OPTIONS] IMAGE [COMMAND...]``"""
        words = [self.prog]
        if any(argument.action != "help" for argument in self.options):
            words.append("[OPTIONS]")
        for argument in self.positionals:
            words.append({None: "{0}", "?": "[{0}]", "*": "[{0}...]", "+": "{0} [{0}...]",
                          REMAINDER: "[{0}...]"}[argument.nargs].format(argument.metavar))
        if self.commands is not None:
            words.append(self.commands.metavar)
        return " ".join(words)

    def format_help(self):
        lines = [f"Usage:  {self.usage()}", ""]
        if self.description:
            lines += [self.description[0].upper() + self.description[1:], ""]
        # Options without a one-letter name line up after those with one, as Docker's.
        rows = [("Options:", [(("    " if argument.names[0].startswith("--") else "")
                               + argument.invocation(), argument.help or "")
                              for argument in self.options])]
        if self.commands is not None:
            rows.append(("Commands:", list(self.commands.summaries.items())))
        for title, entries in rows:
            if entries:
                width = max(len(left) for left, _ in entries) + 4
                lines.append(title)
                lines += [f"  {left:<{width}}{right}".rstrip() for left, right in entries]
                lines.append("")
        return "\n".join(lines)

    def print_help(self):
        sys.stdout.write(self.format_help())


class Commands:
    """A parser's subcommands: ``run``, ``ps``, ``image ls``...

    There are seventy of them, and a command line runs one.  With ``only``,
    the parsers of the others are not built (each costs a little, all of
    them together a noticeable part of a container's start); their names
    and one-line helps are still known, so a mistyped name is still told
    apart from a real one.  Without ``only`` (``--help``, the docs) every
    parser is built.
    """

    def __init__(self, parent, dest, metavar, parser_class, only=None):
        self.parent, self.dest, self.metavar = parent, dest, metavar
        self.parser_class, self.only = parser_class, only
        self.parsers = {}       # name -> Parser, for those that were built
        self.summaries = {}     # name -> one line of help, for every command

    def add_parser(self, name, help=None, **settings):
        self.summaries[name] = help or ""
        if self.only is not None and name != self.only:
            return _Unbuilt()
        parser = self.parser_class(prog=f"{self.parent.prog} {name}", help=help, **settings)
        self.parsers[name] = parser
        return parser

    def parser(self, name):
        if name not in self.summaries:
            self.parent.error(f"'{name}' is not a {self.parent.prog} command")
        if name not in self.parsers:
            raise LookupError(f"the parser of {name!r} was not built (only {self.only!r} was)")
        return self.parsers[name]


class _Unbuilt:
    """Stands in for the parser of a command this run does not need."""

    built = False

    def __getattr__(self, name):
        return lambda *arguments, **settings: self


def looks_like_option(word):
    """``-x``, ``--name``, ``-it``; not ``-`` (standard input) nor ``-1`` (a number)."""
    number = word[1:].replace(".", "", 1)
    return word.startswith("-") and word != "-" and not host.is_decimal(number)


def is_whole_number(text):
    """Say whether ``text`` is a whole number in plain decimal: a sign, then ASCII digits."""
    return host.is_decimal(text[1:] if text[:1] in "+-" else text)
