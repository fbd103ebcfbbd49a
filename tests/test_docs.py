"""The README is a short front page that starts with the two set-up commands, and the
generated documentation pages (docs/hooks.py) cover every command, flag, recipe and
module. MkDocs itself is not run here: `.ci/run` runs `mkdocs build --strict`."""

import argparse
import importlib.util
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETUP_COMMANDS = ['pip install -e . && transferkit demo',
                  'pip install -e ".[test]" && python -m pytest']


def _load_hooks():
    spec = importlib.util.spec_from_file_location("transferkit_docs_hooks",
                                                  os.path.join(REPO, "docs", "hooks.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = _load_hooks()


def _readme():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        return f.read()


def test_readme_is_a_short_front_page():
    assert len(_readme().splitlines()) <= 300


def test_readme_starts_with_the_two_setup_commands():
    # The first code block of the README holds exactly the two commands, in order.
    first_block = re.search(r"```[a-z]*\n(.*?)```", _readme(), re.S).group(1)
    commands = [line for line in first_block.splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert commands == SETUP_COMMANDS


def test_readme_links_point_at_files_or_generated_pages():
    generated = {os.path.join("docs", page) for page in hooks.generated_pages()}
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", _readme())
    local = [link for link in links if "://" not in link]
    assert local, "the README links to the docs pages"
    missing = [link for link in local
               if not os.path.exists(os.path.join(REPO, link))
               and os.path.normpath(link) not in generated]
    assert not missing


def test_front_page_links_are_relative_to_the_site():
    page = hooks.front_page("[a](docs/guides/data.md#x) and [b](docs/safety.md)")
    assert page == "[a](guides/data.md#x) and [b](safety.md)"


@pytest.fixture(scope="module")
def parser():
    from transferkit.cli.main import build_parser
    return build_parser()


def _subcommands(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_cli_reference_has_every_command_and_flag(parser):
    page = hooks.cli_reference(parser)
    commands = _subcommands(parser)
    assert len(commands) >= 10
    for name, sub in commands.items():
        assert f"## `transferkit {name}`" in page, name
        section = page.split(f"## `transferkit {name}`", 1)[1].split("\n## ", 1)[0]
        assert sub.format_usage().split()[2] == name
        for action in sub._actions:
            for flag in action.option_strings:
                assert f"`{flag}" in section or f", {flag}" in section, (name, flag)
            if not action.option_strings and action.help != argparse.SUPPRESS:
                assert f"`{action.metavar or action.dest}" in section, (name, action.dest)
        if sub.epilog:
            assert sub.epilog.strip().splitlines()[-1].strip() in section, name


def test_cli_reference_follows_the_parser():
    # A flag added to a parser shows up in the page without an edit to the docs.
    parser = argparse.ArgumentParser(prog="transferkit")
    sub = parser.add_subparsers(dest="command").add_parser("fresh", help="a new command")
    sub.add_argument("--brand-new-flag", metavar="N", help="it does <this> | that")
    page = hooks.cli_reference(parser)
    assert "## `transferkit fresh`" in page
    assert "| `--brand-new-flag N` | it does &lt;this&gt; \\| that |" in page


def test_recipe_book_page_has_every_recipe_and_setting():
    from transferkit.training.recipe_book import RECIPES

    page = hooks.recipe_reference()
    for name, recipe in RECIPES.items():
        assert f"\n## {name}\n" in page
        section = page.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
        for key, _, _ in recipe.settings:
            assert f"| `{key}` |" in section, (name, key)


def test_recipe_book_page_has_every_recipe_key():
    from transferkit.core.config import leaves
    from transferkit.training.recipe import RecipeConfig

    page = hooks.recipe_reference().split("## Recipe keys", 1)[1]
    for leaf in leaves(RecipeConfig):
        assert f"| `{leaf.key}` |" in page, leaf.key


def test_api_pages_have_every_module_and_subpackage():
    pages = hooks.api_pages()
    directives = {line[4:].strip() for page in pages.values()
                  for line in page.splitlines() if line.startswith("::: ")}
    root = os.path.join(REPO, "transferkit")
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(("_", "."))]
        package = os.path.relpath(folder, REPO).replace(os.sep, ".")
        if folder != root and "__init__.py" in files:
            assert package in directives, package
        for name in files:
            if name.endswith(".py") and not name.startswith("_"):
                assert f"{package}.{name[:-3]}" in directives, (package, name)
    # The nav lists every API page.
    nav = {page for entry in hooks.api_nav() for page in entry.values()}
    assert nav == set(pages)
