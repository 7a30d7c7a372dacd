"""User-facing errors: one line naming the file / field / topic and what was expected."""


def one_line(exc: BaseException) -> str:
    """An exception in one line: its type and the first line of its message (the type alone for an empty one)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


class VlaRosError(Exception):
    """Base for errors caused by user input (config, URDF, bag, CLI). Reported without a traceback."""


class ConfigError(VlaRosError):
    """A robot / policy config or URDF is missing, malformed or inconsistent."""

    def __init__(self, source: str, field: str, problem: str):
        self.source, self.field, self.problem = str(source), field, problem
        where = f"{self.source}: {field}" if field else self.source
        super().__init__(f"{where}: {problem}")


class UnknownJointError(VlaRosError):
    """A message or call named a joint the robot model does not have."""
