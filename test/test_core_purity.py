"""The functional core never imports rclpy: checked by importing every core module in a fresh interpreter."""

import pkgutil
import subprocess
import sys

import vla_ros.core


def test_core_modules_import_without_rclpy():
    modules = [m.name for m in pkgutil.walk_packages(vla_ros.core.__path__, "vla_ros.core.")]
    assert "vla_ros.core.robot" in modules and "vla_ros.core.types" in modules
    code = (
        "import sys, importlib\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m == 'rclpy' or m.startswith('rclpy.'))\n"
        "print(','.join(bad))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "", f"core imported rclpy: {done.stdout}"
