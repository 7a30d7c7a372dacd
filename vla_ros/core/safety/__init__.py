"""The safety-limits filter: the last word before hardware (see filter.py for the contract, modes.py for the
state machine a reviewer audits)."""

from vla_ros.core.safety.config import SafetyConfig
from vla_ros.core.safety.filter import SafetyFilter
from vla_ros.core.safety.report import Intervention, ResetResult, SafeCommand, Violation

__all__ = ["Intervention", "ResetResult", "SafeCommand", "SafetyConfig", "SafetyFilter", "Violation"]
