"""Test suites: YAML files of a team's own tests, run beside (or instead of) the built-in
battery. `loader` reads and validates a file into a normalised, versioned definition (a
leaf: store, CLI and API read suite files without the engine). What runs a suite's tests
is the engine's: `certify.suite_tests` turns each into a `BatteryTest` the runner runs
like any other, `certify.suite_assertions` (and `suite_judge`) decide its answers.
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
