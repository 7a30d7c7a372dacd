"""Errors a policy backend raises at run time, each reported as one line (no traceback)."""

from vla_ros.core.errors import VlaRosError


class ObservationError(VlaRosError):
    """The observation lacks something the policy needs (a camera, a joint) or has the wrong image format."""


class PolicyUnavailableError(VlaRosError):
    """A remote policy server could not be reached, or did not answer, within the configured time."""


class PolicyServerError(VlaRosError):
    """A remote policy server answered with an error (its message or traceback is in `detail`)."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail


class PlaybackExhaustedError(VlaRosError):
    """A playback policy was asked for actions after the end of its recording."""
