"""The command-line skeleton: subcommand groups found in subsystem modules."""

from sipdisp import cli
from sipdisp.storage import schema


def test_db_group_is_registered_from_the_storage_package():
    """sipdisp.storage.commands is discovered and adds `db`."""
    modules = [m.__name__ for m in cli.command_modules()]
    assert "sipdisp.storage.commands" in modules
    args = cli.build_parser().parse_args(["db", "check", "sqlite:///x.db"])
    assert args.url == "sqlite:///x.db" and callable(args.func)


def test_ddl_runs_without_a_database(capsys):
    """`sipdisp db ddl sqlite` prints the schema and exits 0."""
    assert cli.main(["db", "ddl", "sqlite"]) == 0
    assert capsys.readouterr().out == schema.render_file("sqlite")


def test_no_command_prints_help(capsys):
    """Without a command the help is printed and the exit code is 2."""
    assert cli.main([]) == 2
    assert "db" in capsys.readouterr().out
