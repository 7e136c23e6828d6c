"""What the commands share: the parser's classes, argument types, defaults read from the library."""

import argparse
import ast
import importlib.util
import json
from pathlib import Path

BACKENDS = ("tensorflow", "jax", "torch")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written, and each argument's default shown where it has one."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, [], False, argparse.SUPPRESS) and "default" not in text:
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """Usage mistakes in one line, naming the command's --help."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} ({self.prog} --help shows the usage)\n")


def positive(kind):
    """An argument type: a number (`kind` int or float) > 0."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {'whole ' if kind is int else ''}number > 0, "
                                             f"received {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a number > 0, received {text!r}")
        return value
    parse.__name__ = kind.__name__
    return parse


def library_defaults(module, function):
    """The defaults of `module.function`'s keyword arguments, read from its source without
    importing it (the module imports Keras): the command line's defaults are the library's."""
    tree = ast.parse(Path(importlib.util.find_spec(module).origin).read_text())
    constants = {target.id: node.value for node in tree.body if isinstance(node, ast.Assign)
                 for target in node.targets if isinstance(target, ast.Name)}
    definition = next(node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == function)
    arguments = definition.args.args[len(definition.args.args) - len(definition.args.defaults):]
    return {argument.arg: ast.literal_eval(constants.get(getattr(default, "id", None), default))
            for argument, default in zip(arguments, definition.args.defaults)}


def import_tensorflow_if_installed():
    """Keras and the input pipeline import TensorFlow anyway: import it first, quietly, and
    (under JAX or torch) off the GPUs."""
    if importlib.util.find_spec("tensorflow") is not None:
        from keras_bat.runtime import import_tensorflow

        import_tensorflow()


def print_json(value):
    print(json.dumps(value, indent=2))
