"""The lowest-versions job: the lower bounds in pyproject.toml, installed exactly, must work.

    python3.11 ci/lowest.py            # what `make test-lowest` runs

1. A throwaway venv (.venv-lowest, made anew each run).
2. Every `[project] dependencies` entry, and every optional extra's (the tests use them),
   `NAME>=LOW` is installed as `NAME==LOW`, from a
   wheel only (a bound with no cp311 wheel is one that would be built from source), in one
   pip call together with the `test` dependency group at its normal versions: if a test
   tool needed a newer runtime dependency, pip fails here instead of quietly upgrading it.
   Dependencies of dependencies are whatever pip picks today, as a user would get them.
3. The project itself, --no-deps; then `pip check`, and a check that every runtime
   dependency really is at its lower bound.
4. `python -m importer --help` and every subcommand's --help (typer 0.12.0 crashed there).
5. The fast tests: pytest -m "not slow and not e2e", less one text-equality test that is
   checked here as JSON instead (see SPELLING_ONLY).

Every entry in `[project] dependencies` must have a `>=` lower bound, or this fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-lowest"
PIP_QUIET = ["--quiet", "--disable-pip-version-check", "--no-input"]
# NAME[extras] SPECIFIERS ; MARKER  (PEP 508 without URLs, which we do not use)
REQUIREMENT = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?P<extras>\[[^\]]*\])?"
    r"\s*(?P<specs>[^;]*?)\s*(?:;\s*(?P<marker>.+))?$"
)
START = time.monotonic()
# Compares schemas/schema.json byte for byte with what the installed pydantic generates:
# pydantic < 2.9 spells a described reference `{"allOf": [{"$ref": R}], ...}`, newer ones
# `{"$ref": R, ...}`, the same JSON Schema. Left out of the run; same_schema() checks the
# file as JSON, that one spelling unified, so a stale file still fails this job.
SPELLING_ONLY = ["tests/test_schema.py::test_json_schema_file_is_current"]


def say(message: str) -> None:
    print(f"[lowest {time.monotonic() - START:5.0f}s] {message}", flush=True)


def run(*args: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command; a failure stops the job (its output is already on the terminal)."""
    done: subprocess.CompletedProcess[str] = subprocess.run(
        [str(a) for a in args], check=True, text=True, **kwargs
    )
    return done


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def same_version(a: str | None, b: str) -> bool:
    """2.2 == 2.2.0 (plain release numbers; anything else must match exactly)."""
    trim = re.compile(r"(\.0+)+$")
    return a is not None and trim.sub("", a) == trim.sub("", b)


def unwrap_refs(node: object) -> object:
    """{"allOf": [{"$ref": R}], **rest} -> {"$ref": R, **rest}, all the way down."""
    if isinstance(node, list):
        return [unwrap_refs(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: unwrap_refs(value) for key, value in node.items()}
    match node.get("allOf"):
        case [{"$ref": ref, **rest}] if not rest and "$ref" not in node:
            del node["allOf"]
            node["$ref"] = ref
    return node


def same_schema(py: Path) -> None:
    """schemas/schema.json is the JSON Schema the lowest pydantic generates, as JSON."""
    generated = run(
        py,
        "-c",
        "import sys; from importer.schema import json_schema_text as j; sys.stdout.write(j())",
        stdout=subprocess.PIPE,
        cwd=ROOT,
    ).stdout
    committed = (ROOT / "schemas" / "schema.json").read_text(encoding="utf-8")
    if unwrap_refs(json.loads(generated)) != unwrap_refs(json.loads(committed)):
        sys.exit(
            "lowest: schemas/schema.json is not what the model generates (run `make schema-json`)"
        )


def lowest_pins(dependencies: list[str]) -> dict[str, tuple[str, str]]:
    """{canonical name: (requirement pinned to its lower bound, the bound)}."""
    pins: dict[str, tuple[str, str]] = {}
    for dependency in dependencies:
        match = REQUIREMENT.match(dependency)
        if match is None:
            sys.exit(f"lowest: cannot read the dependency {dependency!r}")
        lows = [
            spec.strip()[2:].strip()
            for spec in match["specs"].split(",")
            if spec.strip().startswith(">=")
        ]
        if len(lows) != 1:
            sys.exit(f"lowest: {dependency!r} needs exactly one '>=' lower bound")
        pinned = f"{match['name']}{match['extras'] or ''}=={lows[0]}"
        if match["marker"]:
            pinned += f" ; {match['marker']}"
        pins[canonical(match["name"])] = (pinned, lows[0])
    return pins


def group(groups: dict[str, list[object]], name: str) -> list[str]:
    """A PEP 735 dependency group, include-group entries expanded."""
    found: list[str] = []
    for entry in groups[name]:
        if isinstance(entry, dict):
            found += group(groups, entry["include-group"])
        else:
            found.append(str(entry))
    return found


def main() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    extras = project["project"].get("optional-dependencies", {})
    pins = lowest_pins(
        project["project"]["dependencies"] + [dep for deps in extras.values() for dep in deps]
    )
    test_tools = group(project["dependency-groups"], "test")
    say("runtime dependencies at their lower bounds: " + ", ".join(p for p, _ in pins.values()))

    shutil.rmtree(VENV, ignore_errors=True)
    run(sys.executable, "-m", "venv", VENV)
    (VENV / ".gitignore").write_text("*\n", encoding="utf-8")  # as venv does from 3.13 on
    py = VENV / "bin" / "python"
    # The runtime dependencies from wheels only; the project is built from this checkout in a
    # second call, --no-deps.
    run(
        py,
        "-m",
        "pip",
        "install",
        *PIP_QUIET,
        "--only-binary=" + ",".join(pins),
        *[p for p, _ in pins.values()],
        *test_tools,
    )
    run(py, "-m", "pip", "install", *PIP_QUIET, "--no-deps", "-e", ROOT)
    run(py, "-m", "pip", "check")

    frozen = run(py, "-m", "pip", "list", "--format=freeze", capture_output=True).stdout
    installed = {
        canonical(name): version
        for name, _, version in (line.partition("==") for line in frozen.splitlines())
    }
    wrong = {
        name: installed.get(name)
        for name, (_, low) in pins.items()
        if not same_version(installed.get(name), low)
    }
    if wrong:
        sys.exit(f"lowest: not at the lower bound: {wrong}")
    say("installed: " + ", ".join(f"{n}=={installed[n]}" for n in sorted(installed)))

    # The CLI's help screens, each one: typer/click mismatches show there, not on import
    # (a crash, or an eager --version callback that fires and prints the version instead).
    env = dict(os.environ, COLUMNS="100", TERM="dumb", NO_COLOR="1")

    def cli(*args: str) -> str:
        done = subprocess.run(
            [str(py), "-m", "importer", *args], cwd=ROOT, env=env, text=True, capture_output=True
        )
        if done.returncode != 0:
            sys.exit(
                f"lowest: `python -m importer {' '.join(args)}` exited "
                f"{done.returncode}:\n{done.stdout}{done.stderr}"
            )
        return done.stdout

    def check_help(*command: str) -> None:
        shown = cli(*command, "--help")
        if not shown.lstrip().startswith("Usage: "):
            sys.exit(
                f"lowest: `python -m importer {' '.join(command)} --help` showed no usage:\n{shown}"
            )

    check_help()
    commands = run(
        py,
        "-c",
        "import typer.main, importer.cli as c\n"
        "def walk(cmd, path):\n"
        "    yield path\n"
        "    for name, sub in sorted(getattr(cmd, 'commands', {}).items()):\n"
        "        yield from walk(sub, path + [name])\n"
        "for p in walk(typer.main.get_command(c.app), []): print(' '.join(p))\n",
        stdout=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    ).stdout.splitlines()
    for command in commands[1:]:
        check_help(*command.split())
    version = cli("--version")
    if not re.fullmatch(r"event-backfill \S+\n", version):
        sys.exit(f"lowest: `python -m importer --version` showed {version!r}")
    say(f"--help shows usage for: {', '.join(c or '(top)' for c in commands)}; {version.strip()}")

    same_schema(py)
    say("schemas/schema.json is what the model generates (as JSON)")

    say("the fast tests, with the lowest versions")
    deselect = [arg for test in SPELLING_ONLY for arg in ("--deselect", test)]
    tests = subprocess.run(
        [
            str(py),
            "-m",
            "pytest",
            "-m",
            "not slow and not e2e",
            "-q",
            "-p",
            "no:cacheprovider",
            *deselect,
            *sys.argv[1:],
        ],
        cwd=ROOT,
    )
    # Nothing printed after pytest's own summary: CI reads the last lines for the count.
    sys.exit(tests.returncode)


if __name__ == "__main__":
    main()
