"""The launching helpers, under the name older test files import them by; they live in tests/helpers."""

from helpers import free_port, launch_two_processes

__all__ = ["free_port", "launch_two_processes"]
