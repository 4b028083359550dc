"""`python -m ppl.launch -n N [--local-devices K] [--timeout S] -- COMMAND ...`: N processes of one run on this
machine, for trying `ppl.distributed` and for tests.

Each process runs COMMAND with JAX_COORDINATOR_ADDRESS=127.0.0.1:<a free port>, JAX_NUM_PROCESSES=N and its
JAX_PROCESS_ID (and, with --local-devices, K forced CPU devices each); `ppl run --distributed` and
`ppl.distributed.initialize()` read them. Output lines are forwarded with a "[i] " prefix. When a process fails,
the others are stopped (SIGKILL after a grace period: JAX's distributed client takes SIGTERM as a notice of
preemption and does not stop) and the launcher exits with the first failing status; after `--timeout` seconds
all are stopped. On a cluster use the scheduler instead (docs/distributed.md): `srun` sets SLURM's variables.
"""
import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time


def free_port():
    """A TCP port nobody listens on now, on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _forward(stream, prefix, out):
    for line in iter(stream.readline, ""):
        out.write(prefix + line)
        out.flush()


def environment(i, n, port, local_devices=None, base=None):
    """The environment of process i of n with the coordinator at 127.0.0.1:port."""
    env = dict(os.environ if base is None else base, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
               JAX_NUM_PROCESSES=str(n), JAX_PROCESS_ID=str(i), PYTHONUNBUFFERED="1")
    if local_devices is not None:
        flags = [f for f in env.get("XLA_FLAGS", "").split() if "force_host_platform_device_count" not in f]
        env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={local_devices}"])
        env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def launch(command, n, local_devices=None, timeout=None, grace=5.0, out=None, env=None):
    """Run `command` (a list) as processes 0..n−1 of one distributed run; returns the exit status (0 when all
    succeed, else the first failure's; 124 on timeout)."""
    out = out or sys.stdout
    port = free_port()
    procs = [subprocess.Popen(command, env=environment(i, n, port, local_devices, env), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, bufsize=1) for i in range(n)]
    threads = [threading.Thread(target=_forward, args=(p.stdout, f"[{i}] ", out), daemon=True)
               for i, p in enumerate(procs)]
    for t in threads:
        t.start()
    end = None if timeout is None else time.monotonic() + timeout
    status = 0
    while [p.poll() for p in procs].count(None):      # poll every process (any() would stop at the first)
        failed = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode not in (None, 0)]
        late = end is not None and time.monotonic() > end
        if failed or late:
            status = 124 if late and not failed else failed[0][1]
            why = (f"timed out after {timeout} s" if late and not failed
                   else f"process {failed[0][0]} exited with status {failed[0][1]}")
            out.write(f"ppl.launch: {why}; stopping the other processes\n")
            _stop(procs, grace)
            break
        time.sleep(0.1)
    for t in threads:
        t.join(timeout=5)
    if status == 0:
        failed = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode != 0]
        if failed:
            status = failed[0][1]
            out.write(f"ppl.launch: process {failed[0][0]} exited with status {failed[0][1]}\n")
    return status if status >= 0 else 128 - status


def _stop(procs, grace):
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    end = time.monotonic() + grace
    while time.monotonic() < end and any(p.poll() is None for p in procs):
        time.sleep(0.1)
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ppl.launch", description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--processes", type=int, required=True, help="how many processes")
    parser.add_argument("--local-devices", type=int, default=None,
                        help="forced CPU devices per process (XLA_FLAGS), e.g. 2")
    parser.add_argument("--timeout", type=float, default=None, help="stop everything after this many seconds")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --, e.g. -- ppl run model.ppl --distributed")
    if args.processes < 1:
        parser.error(f"-n must be >= 1, got {args.processes}")
    return launch(command, args.processes, args.local_devices, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
