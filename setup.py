"""Builds the native runtime and agent (C) alongside the Python package."""
import importlib.util
import os

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def _native_build():
    spec = importlib.util.spec_from_file_location("_pybpfc_native_build",
                                                  os.path.join(HERE, "pybpfc", "_native", "build.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class BuildPyWithNative(build_py):
    def run(self):
        nb = _native_build()
        nb.build_all(out_dir=os.path.join(HERE, "pybpfc", "_native"), root=HERE)
        super().run()
        if not self.editable_mode:
            nb.build_all(out_dir=os.path.join(self.build_lib, "pybpfc", "_native"), root=HERE)


setup(cmdclass={"build_py": BuildPyWithNative})
