"""Test suites: YAML files of a team's own tests, run beside (or instead of) the built-in
battery. `loader` reads and validates a file into a normalised, versioned definition;
`assertions` decides an answer against it; `custom` turns each of its tests into a
`BatteryTest` the runner runs like any other.

`custom` is not imported here: the certification plan imports it lazily (it builds on
the battery), and a reader of suite files should not need the engine.
"""

from modelcert.suites.loader import (
    LoadedSuite,
    SuiteFileError,
    SuiteProblem,
    load_suite_file,
    parse_suite,
    suite_schema,
    suite_version,
)

__all__ = [
    "LoadedSuite",
    "SuiteFileError",
    "SuiteProblem",
    "load_suite_file",
    "parse_suite",
    "suite_schema",
    "suite_version",
]
