"""The ``oihedge`` command line: parse, call a stage, print. No logic of its own.

Errors are caught here only: a bad argument, a bad configuration value, bad input data or
an unusable service becomes one line on stderr and exit code 2; any other error (a
defect) one line and exit code 1. ``OIHEDGE_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from oihedge.features.schema import PanelSchemaError
from oihedge.pipelines.cli import backtest as cli_backtest
from oihedge.pipelines.cli import dashboard as cli_dashboard
from oihedge.pipelines.cli import data as cli_data
from oihedge.pipelines.cli import features as cli_features
from oihedge.pipelines.cli import live as cli_live
from oihedge.pipelines.cli import models as cli_models
from oihedge.pipelines.cli import simulate as cli_simulate
from oihedge.pipelines.cli.common import CliError, config_option, load_cli_config, out
from oihedge.pipelines.cli.config import ConfigError, default_config_text


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="oihedge", prog_name="oihedge")
def app() -> None:
    """oihedge: protect a long crypto portfolio from liquidation cascades."""


@app.group("config")
def config_group() -> None:
    """Show the configuration."""


@config_group.command("show")
@click.option("--defaults", is_flag=True, help="Print the commented default file instead.")
@config_option
def config_show(defaults: bool, config_path: Path | None) -> None:
    """Print the effective configuration (defaults < --config < OIHEDGE_* variables)."""
    if defaults:
        out.print(default_config_text(), markup=False, highlight=False)
        return
    cfg = load_cli_config(config_path)
    out.print_json(cfg.model_dump_json(indent=2))


def _fail(message: str, code: int = 2) -> int:
    """One line on stderr (never wrapped), and the exit code."""
    sys.stderr.write(" ".join(message.split()) + "\n")
    return code


#: (module, class) of the errors third-party stages raise on bad input or an unusable
#: service (an unsupported tracking URI, a venue that cannot be reached): reported as one
#: line and exit 2 like our own. Looked up only if the module was imported by the command.
_FOREIGN_INPUT_ERRORS = (
    ("polars.exceptions", "PolarsError"),
    ("mlflow.exceptions", "MlflowException"),
    ("optuna.exceptions", "OptunaError"),
    ("sqlalchemy.exc", "SQLAlchemyError"),
    ("ccxt.base.errors", "BaseError"),
    ("oihedge.pipelines.ingest.collectors", "CollectorError"),
    ("oihedge.serving.execution.brokers._base", "BrokerError"),
    ("oihedge.models.registry", "RegistryError"),
)


def _input_errors() -> tuple[type[BaseException], ...]:
    """Exception types meaning "this input (file, key, option, URL, venue) is unusable".

    ``ValueError`` covers :class:`ConfigError`, :class:`PanelSchemaError` and every stage's
    own input errors (a stage raises ``ValueError`` naming the bad value, as the style
    guide asks); ``OSError`` covers unreadable files and refused connections.
    """
    found: list[type[BaseException]] = [CliError, ValueError, OSError]
    for module_name, class_name in _FOREIGN_INPUT_ERRORS:
        module = sys.modules.get(module_name)
        cls = getattr(module, class_name, None) if module is not None else None
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)


def _describe(err: BaseException) -> str:
    """The error's message (a ``ValueError`` names the bad value, by the style guide);
    with its type in front for other errors, whose message alone may not say what kind of
    problem it is (a refused connection, a registry error)."""
    text = str(err).strip()
    if isinstance(err, (CliError, ValueError)) and text:
        return text
    if isinstance(err, FileNotFoundError) and err.filename is not None:
        return f"{err.filename}: {err.strerror or 'no such file or directory'}"
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


# Each stage's commands live in their own module and register here.
for _module in (
    cli_simulate,
    cli_data,
    cli_features,
    cli_models,
    cli_backtest,
    cli_live,
    cli_dashboard,
):
    _module.register(app)


def _command_path(argv: list[str] | None) -> str:
    """``oihedge data report`` from the arguments: the (sub)commands named in them."""
    names = ["oihedge"]
    command: click.Command = app
    for token in sys.argv[1:] if argv is None else argv:
        if isinstance(command, click.Group) and token in command.commands:
            command = command.commands[token]
            names.append(token)
        elif not token.startswith("-"):
            break
    return " ".join(names)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app and turn errors into one line on stderr.

    Bad arguments, configuration, input files and unusable services exit 2; anything else
    (a defect) exits 1, still in one line, naming the exception; ``OIHEDGE_DEBUG=1`` lets
    every error through with its traceback.
    """
    debug = os.environ.get("OIHEDGE_DEBUG", "").strip() not in ("", "0")
    try:
        code = app.main(args=argv, prog_name="oihedge", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as err:
        click.echo(err.ctx.get_help() if err.ctx else "", err=False)
        return 0
    except click.UsageError as err:
        command = err.ctx.command_path if err.ctx else "oihedge"
        return _fail(f"{command}: error: {err.format_message()}")
    except click.ClickException as err:
        return _fail(f"oihedge: error: {err.format_message()}")
    except (click.exceptions.Abort, KeyboardInterrupt):
        return _fail("oihedge: aborted", code=130)
    except Exception as err:  # noqa: BLE001 - the boundary: every error becomes one line
        if debug:
            raise
        if isinstance(err, (CliError, ConfigError, PanelSchemaError)):
            return _fail(f"oihedge: error: {_describe(err)}")
        command = _command_path(argv)
        if isinstance(err, _input_errors()):
            return _fail(f"{command}: error: {_describe(err)}")
        return _fail(
            f"{command}: internal error: {_describe(err)} (OIHEDGE_DEBUG=1 shows the traceback)",
            code=1,
        )
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
