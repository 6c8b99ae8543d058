"""sandboxvm fork server: a warm Python interpreter for sandboxvm-agent.

Started by the agent as  INTERPRETER... forkserver.py SOCKET AGENT_PID MODULE...  (embedded in the
agent binary, written to a private 0700 directory at first use). It imports MODULE... once, listens
on SOCKET, prints "ready" on stdout, and then forks one child per job, so a job starts with the
interpreter up and the modules imported.

One connection per job, from the agent only (checked with SO_PEERCRED):
  agent -> server: 4-byte big-endian length + JSON {"script", "args", "cwd", "env"}, with the
                   job's stdin, stdout and stderr attached to the first bytes (SCM_RIGHTS).
  server -> agent: "pid N\n" once the child leads its own session, then "status RAW\n" (the raw
                   waitpid status) when it has been reaped; "error TEXT\n" instead when no child ran.
The server exits when its stdin reaches end of file (the agent is gone or retired it), once the
children it is waiting for have ended.
"""

import array
import gc
import io
import json
import os
import selectors
import socket
import struct
import sys

_HEADER = struct.Struct(">I")
_MAX_JOB_BYTES = 16 << 20
_JOB_READ_TIMEOUT_S = 10.0
# Without pidfd_open the server polls for exited children this often.
_POLL_S = 0.02


def main():
    socket_path, agent_pid, modules = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    for name in modules:
        try:
            __import__(name)
        except Exception as e:  # the job imports it again and gets the error itself
            _log(f"cannot preload {name}: {type(e).__name__}: {e}")
    job = Server(socket_path, agent_pid).serve()
    if job is not None:
        _run_job(job)


def _log(text):
    try:
        print(text, file=sys.stderr, flush=True)  # the agent logs it, naming the server
    except OSError:
        pass


class Server:
    def __init__(self, socket_path, agent_pid):
        self._agent_pid = agent_pid
        self._selector = selectors.DefaultSelector()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(socket_path)
        self._listener.listen(64)
        self._children = {}  # pid -> (connection, pidfd or None)
        self._draining = False

    def serve(self):
        """Serves jobs; returns the job to run in a forked child, or None when the server should exit."""
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._selector.register(0, selectors.EVENT_READ, "stdin")
        # Objects that exist now are never collected in the children: the collector would otherwise
        # touch (and so copy) every page the imports filled.
        gc.collect()
        gc.freeze()
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        while True:
            if self._draining and not self._children:
                return None
            polling = any(pidfd is None for _, pidfd in self._children.values())
            for key, _ in self._selector.select(_POLL_S if polling else None):
                tag = key.data
                if tag == "accept":
                    job = self._accept()
                    if job is not None:
                        return job
                elif tag == "stdin":
                    if not os.read(0, 4096):
                        self._drain()
                else:
                    self._reap(tag)
            if polling:
                for pid in [p for p, (_, pidfd) in self._children.items() if pidfd is None]:
                    self._reap(pid, block=False)

    def _drain(self):
        self._draining = True
        self._selector.unregister(0)
        self._selector.unregister(self._listener)
        self._listener.close()

    def _accept(self):
        try:
            connection, _ = self._listener.accept()
        except OSError:
            return None
        fds = []
        try:
            job, fds = self._read_job(connection)
        except Exception as e:
            _log(f"rejected a job: {type(e).__name__}: {e}")
            for fd in fds:
                os.close(fd)
            _send(connection, f"error {e}\n")
            connection.close()
            return None
        return self._fork(connection, job, fds)

    def _read_job(self, connection):
        connection.settimeout(_JOB_READ_TIMEOUT_S)
        creds = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        peer_pid, _, _ = struct.unpack("3i", creds)
        if peer_pid != self._agent_pid:
            raise PermissionError(f"connection from pid {peer_pid}, not from the agent")
        fds = array.array("i")
        data, ancillary, _, _ = connection.recvmsg(
            65536, socket.CMSG_SPACE(3 * fds.itemsize), socket.MSG_CMSG_CLOEXEC)
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
        fds = list(fds)
        if len(fds) != 3:
            raise ValueError(f"expected 3 file descriptors, got {len(fds)}")
        while len(data) < _HEADER.size:
            data += self._recv(connection)
        (length,) = _HEADER.unpack_from(data)
        if length > _MAX_JOB_BYTES:
            raise ValueError(f"job of {length} bytes is too large")
        body = bytearray(data[_HEADER.size:])
        while len(body) < length:
            body += self._recv(connection)
        job = json.loads(body.decode("utf-8"))
        job["fds"] = fds
        return job, fds

    @staticmethod
    def _recv(connection):
        chunk = connection.recv(65536)
        if not chunk:
            raise EOFError("connection closed before the whole job arrived")
        return chunk

    def _fork(self, connection, job, fds):
        ready_read, ready_write = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as e:
            for fd in (*fds, ready_read, ready_write):
                os.close(fd)
            _send(connection, f"error cannot fork: {e}\n")
            connection.close()
            return None
        if pid == 0:
            # The agent kills the job by process group: lead one before the agent learns the pid.
            os.setsid()
            os.write(ready_write, b"x")
            os.close(ready_write)
            os.close(ready_read)
            self._close_in_child(connection)
            return job
        os.close(ready_write)
        os.read(ready_read, 1)  # empty if the child died first: the status says why
        os.close(ready_read)
        for fd in fds:
            os.close(fd)
        pidfd = None
        if hasattr(os, "pidfd_open"):
            try:
                pidfd = os.pidfd_open(pid)
                self._selector.register(pidfd, selectors.EVENT_READ, pid)
            except OSError:
                pidfd = None
        self._children[pid] = (connection, pidfd)
        _send(connection, f"pid {pid}\n")
        return None

    def _reap(self, pid, block=True):
        try:
            reaped, status = os.waitpid(pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            reaped, status = pid, -1
        if reaped == 0:
            return
        connection, pidfd = self._children.pop(pid)
        if pidfd is not None:
            self._selector.unregister(pidfd)
            os.close(pidfd)
        _send(connection, f"status {status}\n")
        connection.close()

    def _close_in_child(self, connection):
        connection.close()
        for other, pidfd in self._children.values():
            other.close()
            if pidfd is not None:
                os.close(pidfd)
        self._children.clear()
        self._selector.close()
        self._listener.close()


def _send(connection, text):
    try:
        connection.sendall(text.encode("utf-8"))
    except OSError:
        pass  # the agent stopped waiting for this job


def _run_job(job):
    """In the forked child: become the job, then run its script as __main__. Never returns."""
    for target, fd in enumerate(job["fds"]):
        os.dup2(fd, target)
    for fd in set(job["fds"]):
        if fd > 2:
            os.close(fd)
    # The server's stdio objects point at fds 0-2 but may hold its encoding state: rebuild them
    # the way the interpreter did at start-up (same encoding, errors, buffering, -u or not).
    sys.stdin = sys.__stdin__ = _reopen(0, sys.__stdin__, writing=False)
    sys.stdout = sys.__stdout__ = _reopen(1, sys.__stdout__, writing=True)
    sys.stderr = sys.__stderr__ = _reopen(2, sys.__stderr__, writing=True)

    os.environ.clear()
    os.environ.update(job["env"])
    try:
        os.chdir(job["cwd"])
    except OSError as e:
        print(f"sandboxvm fork server: cannot enter {job['cwd']}: {e}", file=sys.stderr)
        sys.exit(127)
    script = job["script"]
    path = os.path.abspath(script)
    sys.argv = [script, *job["args"]]
    if not (sys.flags.isolated or getattr(sys.flags, "safe_path", False)):
        sys.path[0] = os.path.dirname(path)
    # The random module reseeds itself after fork; numpy's global generator does not.
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        try:
            numpy_random.seed()
        except Exception:
            pass
    _exit(_run_main(path))


def _reopen(fd, old, writing):
    if old is None:
        return None
    raw = io.FileIO(fd, "wb" if writing else "rb", closefd=False)
    if writing and old.write_through:  # -u: no binary buffer either
        binary = raw
    else:
        binary = io.BufferedWriter(raw) if writing else io.BufferedReader(raw)
    return io.TextIOWrapper(binary, encoding=old.encoding, errors=old.errors, newline="\n",
                            line_buffering=old.line_buffering, write_through=old.write_through)


def _run_main(path):
    """Runs the file as __main__ the way `python3 FILE` does; returns the exit code."""
    import builtins
    import importlib.machinery
    import types

    module = types.ModuleType("__main__")
    module.__file__ = path
    module.__cached__ = None
    module.__builtins__ = builtins
    module.__loader__ = importlib.machinery.SourceFileLoader("__main__", path)
    global _server_module
    _server_module = sys.modules.get("__main__")  # keeps the server's globals alive under the script
    sys.modules["__main__"] = module
    try:
        with io.open_code(path) as f:
            source = f.read()
    except OSError as e:
        print(f"{sys.executable}: can't open file {path!r}: [Errno {e.errno}] {e.strerror}", file=sys.stderr)
        return 2
    try:
        exec(compile(source, path, "exec", dont_inherit=True), module.__dict__)
    except SystemExit as e:
        return _system_exit_code(e)
    except BaseException as e:
        # Hide the server's own frames: the traceback starts in the script, as for a plain run.
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == _SERVER_FILE:
            tb = tb.tb_next
        e.__traceback__ = tb  # the default hook prints the exception's own traceback
        try:
            sys.excepthook(type(e), e, tb)
        except BaseException:
            import traceback
            traceback.print_exception(type(e), e, tb)
        if isinstance(e, KeyboardInterrupt):
            import signal
            _flush()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        return 1
    return 0


def _system_exit_code(e):
    """The exit status the interpreter makes of an uncaught SystemExit."""
    code = e.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF if -(1 << 31) <= code < (1 << 31) else 0xFF
    try:
        print(code, file=sys.stderr)
    except Exception:
        pass
    return 1


def _flush():
    ok = True
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            ok = False
    return ok


def _exit(code):
    """
    Ends the child the way interpreter shutdown would for the script, without tearing down every
    preloaded module (tens of milliseconds for numpy and pandas): non-daemon threads are joined,
    atexit functions run, the script's globals are released (so files it left open are flushed and
    closed), stdio is flushed.
    """
    threading = sys.modules.get("threading")
    if threading is not None:
        try:
            threading._shutdown()
        except BaseException:
            pass
    import atexit
    atexit._run_exitfuncs()
    main_module = sys.modules.get("__main__")
    if main_module is not None:
        main_module.__dict__.clear()
    gc.collect()
    if not _flush() and code == 0:
        code = 120  # what the interpreter exits with when it cannot flush stdout
    os._exit(code)


_SERVER_FILE = _run_main.__code__.co_filename
_server_module = None

if __name__ == "__main__":
    main()
