"""Several processes, one set of particles: JAX's multi-process runtime (`jax.distributed`).

`initialize()` joins this process to the others (one per host or per accelerator): JAX then sees a global list
of devices, `devices="all"` is every device of every process, and a run splits its particles (is, smc, pf, fkc)
or chains (nuts, hmc) over all of them on one global mesh (`backends/sharding.py`): each process computes its
own particles, and the reductions (log Z, ESS, the tempering bisection) and the gathers of resampling are XLA
collectives (gloo between CPU processes). Every process runs the same program (SPMD) and ends with the same
`Result`: arrays split over processes are gathered to all when read (`NumPyroRuntime.to_numpy`).

Where the processes are told by the environment when not given: `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`,
`JAX_PROCESS_ID` (what `python -m ppl.launch` sets), or SLURM's (`SLURM_JOB_ID`, `SLURM_NTASKS`, `SLURM_PROCID`,
`SLURM_STEP_NODELIST`; the coordinator is the first node, as JAX chooses it).

Faults. A collective waits for every process, inside native code that Python cannot interrupt, and JAX's own
answer to a lost peer is to abort the survivors after its heartbeat timeout. Here a watchdog thread asks the
coordination service which processes are alive (JAX's recoverable mode, so that XLA leaves the decision to
us): when one is gone, the main thread gets a `PeerLostError` if it is in Python, and otherwise, after
`grace` seconds, the process prints that error and exits with code `EXIT_CODE`. A process that does not join
within `timeout` seconds stops the same way (`JoinError`), naming the address and the count to check.
"""
import atexit
import os
import signal
import socket
import sys
import threading
import time

from .errors import PPLError, ValueRangeError

#: the exit status of a process stopped because the others were lost (EX_SOFTWARE)
EXIT_CODE = 70
_state = {}


class DistributedError(PPLError):
    """A multi-process run cannot start or go on."""


class JoinError(DistributedError):
    """Not every process joined the coordinator in time (a wrong count, address or process id, or one died)."""


class PeerLostError(DistributedError):
    """A process of the run stopped or lost its connection while the others needed it."""


def _from_environment(coordinator_address, num_processes, process_id):
    env = os.environ
    slurm = all(v in env for v in ("SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_PROCID"))
    if coordinator_address is None:
        coordinator_address = env.get("JAX_COORDINATOR_ADDRESS")
    if coordinator_address is None and slurm:
        from jax._src.clusters.slurm_cluster import SlurmCluster
        coordinator_address = SlurmCluster.get_coordinator_address(None, None)
    if num_processes is None:
        num_processes = env.get("JAX_NUM_PROCESSES", env.get("SLURM_NTASKS") if slurm else None)
    if process_id is None:
        process_id = env.get("JAX_PROCESS_ID", env.get("SLURM_PROCID") if slurm else None)
    missing = [name for name, v in (("coordinator_address", coordinator_address), ("num_processes", num_processes),
                                    ("process_id", process_id)) if v is None]
    if missing:
        raise DistributedError(
            f"ppl.distributed.initialize: no {', '.join(missing)}: give them, or set JAX_COORDINATOR_ADDRESS "
            f"(host:port of process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID, or run under SLURM (srun) or "
            f"`python -m ppl.launch -n N -- ...`")
    return str(coordinator_address), _integer(num_processes, "num_processes", 1), _integer(process_id,
                                                                                         "process_id", 0)


def _integer(v, what, low):
    try:
        i = int(v)
    except (TypeError, ValueError):
        raise ValueRangeError(f"{what} must be an integer, got {v!r}") from None
    if i < low or isinstance(v, bool):
        raise ValueRangeError(f"{what} must be an integer >= {low}, got {v!r}")
    return i


def _address(address):
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueRangeError(f"coordinator address {address!r} is not host:port (e.g. 127.0.0.1:1234)")
    return host, int(port)


def _reachable(host, port, timeout):
    """Whether something accepts a TCP connection at host:port within `timeout` seconds (polling)."""
    end = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return True
        except OSError:
            if time.monotonic() > end:
                return False
            time.sleep(0.2)


def _stop(error):
    """End this process with `error` told on stderr (the main thread may be blocked in a collective)."""
    sys.stderr.write(f"ppl.distributed: {type(error).__name__}: {error}\n")
    sys.stderr.flush()
    os._exit(EXIT_CODE)


def _raise_lost(signum, frame):
    raise _state["lost"]


def _watch(client, n, me, address, interval, grace):
    """Poll the coordination service; on a lost process, interrupt the main thread, then stop."""
    others = [i for i in range(n) if i != me]
    while not _state.get("closing"):
        time.sleep(interval)
        try:
            live = client.get_live_nodes(list(range(n)))
            gone = [i for i in others if i not in live]
            what = (f"process{'es' if len(gone) > 1 else ''} {', '.join(map(str, gone))} of {n} stopped or lost "
                    f"its connection" if gone else None)
        except Exception as e:      # the service itself is gone: process 0 (it hosts it) stopped
            what = f"the coordinator (process 0 at {address}) is unreachable ({str(e).splitlines()[0][:120]})"
        if what and not _state.get("closing"):
            _state["lost"] = PeerLostError(f"process {me} of {n}: {what}; a run needs every process, so this "
                                           f"one stops too")
            import _thread
            _thread.interrupt_main(signal.SIGUSR1)
            time.sleep(grace)
            if not _state.get("closing"):
                _stop(_state["lost"])
            return


def initialize(coordinator_address=None, num_processes=None, process_id=None, local_devices=None, timeout=60,
               heartbeat=10, grace=2.0):
    """Join this process to a multi-process JAX run: the coordinator (process 0) at `coordinator_address`
    ("host:port"), `num_processes` in all, this one being `process_id`; each unset one is read from the
    environment (module docstring). `local_devices` forces that many CPU devices in this process (testing
    several devices on one machine; set before JAX starts). Call it first, before any JAX computation. Every
    process must join within `timeout` seconds; a process whose heartbeats stop for `heartbeat` seconds (JAX's
    coordination service sends them from a thread of their own, so a long compilation does not count) is lost,
    and the others stop (module docstring). Returns (process_id, num_processes). Calling it again with the same
    settings does nothing."""
    address, n, me = _from_environment(coordinator_address, num_processes, process_id)
    host, port = _address(address)
    heartbeat = _integer(heartbeat, "heartbeat", 1)
    if me >= n:
        raise ValueRangeError(f"process_id {me} is not below num_processes {n}: ids run 0..{n - 1}")
    if "settings" in _state:
        if _state["settings"] != (address, n, me):
            raise DistributedError(f"ppl.distributed is already initialized as process {_state['settings'][2]} of "
                                   f"{_state['settings'][1]} at {_state['settings'][0]}")
        return me, n
    import jax
    from jax._src import distributed, xla_bridge
    if xla_bridge.backends_are_initialized():
        raise DistributedError("ppl.distributed.initialize must come before any JAX computation (JAX's devices "
                               "are already fixed in this process): call it at the top of the program")
    if local_devices is not None:
        jax.config.update("jax_num_cpu_devices", _integer(local_devices, "local_devices", 1))
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.config.update("jax_enable_recoverability", True)
    if me != 0 and not _reachable(host, port, timeout):
        raise JoinError(f"process {me} of {n}: no coordinator answers at {address} within {timeout} s: check the "
                        f"address (host:port of process 0) and that process 0 started")
    # connect() aborts the process when the others do not come: stop it first, with the reason
    joining = threading.Timer(timeout, _stop, (JoinError(
        f"process {me} of {n}: not all {n} processes joined the coordinator at {address} within {timeout} s: "
        f"check that {n} processes were started (num_processes, JAX_NUM_PROCESSES, -n of ppl.launch), each with "
        f"its own process id in 0..{n - 1}, all pointing at {address}"),))
    joining.daemon = True
    joining.start()
    jax.distributed.initialize(address, n, me, initialization_timeout=int(timeout) + 30,
                               heartbeat_timeout_seconds=heartbeat)
    joining.cancel()
    _state["settings"] = (address, n, me)
    if n > 1:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGUSR1, _raise_lost)
        client = distributed.global_state.client
        _state["watchdog"] = threading.Thread(target=_watch, args=(client, n, me, address, 0.5, grace),
                                              daemon=True, name="ppl.distributed watchdog")
        _state["watchdog"].start()
        atexit.register(_finish, client, n)
    return me, n


def _finish(client, n):
    """At exit: wait for every process, then close in order: recoverable mode has no shutdown barrier of its own,
    and a client that disconnects after process 0 took the coordination service down is aborted by XLA."""
    import jax
    try:
        client.wait_at_barrier("ppl.distributed.exit", 60_000)
    except Exception:
        pass
    _state["closing"] = True
    # the watchdog must be out of native code before the interpreter finalizes: a daemon thread that returns
    # from the coordination client then is ended by a forced unwind, which its C++ catch(...) turns into abort
    _state["watchdog"].join(timeout=10)
    if jax.process_index() != 0:
        jax.distributed.shutdown()
        return
    end = time.monotonic() + 30
    while time.monotonic() < end:
        try:
            if len(client.get_live_nodes(list(range(n)))) <= 1:
                return
        except Exception:
            return
        time.sleep(0.05)


def process_index():
    """This process's index (0 when not distributed): only process 0 writes files and draws plots."""
    if "settings" not in _state:
        return 0
    import jax
    return jax.process_index()


def is_main():
    """Whether this process writes the run's outputs (process 0, or the only one)."""
    return process_index() == 0
