"""Commands that listen on a loopback port (`accelerate launch`'s rendezvous, the Space's server).

A port found free is released before the command binds it, so another test process (an xdist worker launching at
the same moment) can take it in between. Both helpers here start the command on a fresh port again when it fails
saying the address is in use, instead of failing the test."""

import socket
import subprocess
import time

ATTEMPTS = 3


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_was_taken(output: str) -> bool:
    # "Address already in use" from Python's socket and gloo's store; EADDRINUSE from torch's TCPStore.
    return "address already in use" in output.lower() or "eaddrinuse" in output.lower()


def run_on_a_free_port(command_for, **run_options) -> subprocess.CompletedProcess:
    """`subprocess.run(command_for(port), capture_output=True, text=True, **run_options)`, on another free port if
    the port was taken before the command bound it."""
    for _ in range(ATTEMPTS):
        result = subprocess.run(command_for(free_port()), capture_output=True, text=True, **run_options)
        if result.returncode == 0 or not port_was_taken(result.stdout + result.stderr):
            return result
    return result


def start_on_a_free_port(command_for, ready, timeout: float = 240, log=None,
                         **popen_options) -> tuple[subprocess.Popen, int]:
    """(process, port): `subprocess.Popen(command_for(port), **popen_options)`, waited on until `ready(port)`;
    started again on another free port if it exits first because the port was taken, as its output says (pipe it
    with text=True, or give `log`: a file that gets its stdout and stderr, written anew at each start). Any other
    early exit, or no readiness within `timeout` seconds, raises with that output."""
    for _ in range(ATTEMPTS):
        if log is not None:
            with open(log, "w") as output_file:  # the child writes to its own copy of the descriptor
                process = subprocess.Popen(command_for(port := free_port()), stdout=output_file,
                                           stderr=subprocess.STDOUT, **popen_options)
        else:
            process = subprocess.Popen(command_for(port := free_port()), **popen_options)
        deadline = time.monotonic() + timeout
        while not ready(port):
            exited = process.poll() is not None
            if exited or time.monotonic() > deadline:
                if not exited:
                    process.kill()
                output = "".join(stream or "" for stream in process.communicate())
                output += log.read_text() if log is not None else ""
                if exited and port_was_taken(output):
                    break
                raise RuntimeError(f"{command_for(port)} exited ({process.returncode}) or was not ready within "
                                   f"{timeout} s:\n{output[-4000:]}")
            time.sleep(0.2)
        else:
            return process, port
    raise RuntimeError(f"the port was taken {ATTEMPTS} times in a row:\n{output[-4000:]}")
