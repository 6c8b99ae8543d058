"""sandboxvm fork server: a warm Python interpreter for sandboxvm-agent.

Started by the agent as  INTERPRETER... forkserver.py SOCKET AGENT_PID [--kernel] MODULE...  (embedded
in the agent binary, written to a private 0700 directory at first use). It imports MODULE... once,
listens on SOCKET, prints "ready" on stdout, and then serves jobs, so a job starts with the
interpreter up and the modules imported:

- fork server (no --kernel): forks one child per job, which runs the script as __main__ and exits;
- kernel (--kernel): runs each job itself, one at a time, in one __main__ namespace kept from job to
  job (a notebook kernel). The job's pipes sit on fds 0-2 while it runs; afterwards the kernel's own
  stdio is put back, so the agent reads end of file on the job's pipes.

One connection per job, from the agent only: checked with the SCM_CREDENTIALS the kernel attaches to
the job's first bytes (SO_PASSCRED is set on the listener), whose pid is the agent's, or under gVisor
the id of one of the agent's threads (gVisor 20240729 puts the sending thread's id there; Linux the
process's). Not SO_PEERCRED, which gVisor answers with the caller's own pid:
  agent -> server: 4-byte big-endian length + JSON {"script", "args", "cwd", "env", "outputs",
                   "save_figures"}, with the job's stdin, stdout and stderr attached to the first bytes
                   (SCM_RIGHTS).
  server -> agent: "pid N\n" once the job's process leads its own session (fork server: the child;
                   kernel: the kernel itself, which the agent started in a session of its own);
                   kernel only: "display JSON-OBJECT\n" for each object the script passed to display(),
                   "result JSON-STRING\n" (repr of the script's final expression, when it has one and it
                   is not None) and "data JSON-OBJECT\n" (display and data only when the job has
                   "rich_results"; that value by MIME type: text/plain, and what
                   its IPython-style _repr_*_ methods give, e.g. text/html, image/png as base64), then "status RAW\n" (a waitpid-style status: the fork
                   server's reaped child, or the kernel's exit code << 8) once the job is over;
                   "error TEXT\n" instead when the job did not run.
With "save_figures", every matplotlib figure still open after the script (also after it raised) is
saved as OUTPUTS/figure-N.png (N counting on from the highest already there) and closed (a figure
the script saved itself with savefig is only closed); plt.show()
under the Agg backend then does nothing (no warning) and leaves the figures open to be saved.
The server exits when its stdin reaches end of file (the agent is gone or retired it): the fork
server once the children it is waiting for have ended, the kernel after its current job.
"""

import array
import gc
import io
import json
import os
import re
import selectors
import socket
import struct
import sys

_HEADER = struct.Struct(">I")
_MAX_JOB_BYTES = 16 << 20
_JOB_READ_TIMEOUT_S = 10.0
# Kernel: the repr of a final expression is cut to this many UTF-8 bytes.
_MAX_REPR_BYTES = 64 << 10
# Kernel: rich representations of one job (display() calls and the final expression together, as JSON)
# stop being added past this many bytes; the agent's ExecResult frame must hold them (1 MiB).
_MAX_RICH_BYTES = 512 << 10
_MAX_DISPLAYS = 64
# IPython's formatters, by MIME type, in the order IPython tries them.
_REPR_METHODS = (
    ("text/html", "_repr_html_"),
    ("text/markdown", "_repr_markdown_"),
    ("image/svg+xml", "_repr_svg_"),
    ("image/png", "_repr_png_"),
    ("image/jpeg", "_repr_jpeg_"),
    ("text/latex", "_repr_latex_"),
    ("application/json", "_repr_json_"),
    ("application/javascript", "_repr_javascript_"),
)
# Without pidfd_open the server polls for exited children this often.
_POLL_S = 0.02


def main():
    socket_path, agent_pid, modules = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    kernel = modules[:1] == ["--kernel"]
    if kernel:
        modules = modules[1:]
    for name in modules:
        try:
            __import__(name)
        except Exception as e:  # the job imports it again and gets the error itself
            _log(f"cannot preload {name}: {type(e).__name__}: {e}")
    if kernel:
        Kernel(socket_path, agent_pid).serve()
        # Without interpreter shutdown: threads a job left running must not keep the kernel alive.
        _flush()
        os._exit(0)
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
        # Before any connection: accepted sockets inherit it, and the kernel then attaches the sender's
        # credentials (verified: a process without CAP_SYS_ADMIN cannot claim another pid) to what it sends.
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
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
        taken = self._take_job()
        if taken is None:
            return None
        connection, job = taken
        return self._fork(connection, job, job["fds"])

    def _take_job(self):
        """Accepts a connection and reads its job: (connection, job), or None after refusing it."""
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
        return connection, job

    def _read_job(self, connection):
        connection.settimeout(_JOB_READ_TIMEOUT_S)
        fds = array.array("i")
        creds = struct.Struct("3i")
        data, ancillary, _, _ = connection.recvmsg(
            65536, socket.CMSG_SPACE(3 * fds.itemsize) + socket.CMSG_SPACE(creds.size), socket.MSG_CMSG_CLOEXEC)
        peer_pid = None
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
            elif level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(payload) >= creds.size:
                peer_pid, _, _ = creds.unpack_from(payload)
        fds = list(fds)
        if not self._from_agent(peer_pid):
            for fd in fds:
                os.close(fd)
            raise PermissionError(f"connection from pid {peer_pid}, not from the agent")
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

    def _from_agent(self, pid):
        if pid is None or pid <= 0:
            return False
        # A process without CAP_SYS_ADMIN cannot claim another process's (or thread's) id.
        return pid == self._agent_pid or os.path.isdir(f"/proc/{self._agent_pid}/task/{pid}")

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


class Kernel(Server):
    """
    Runs each job in this interpreter, one at a time (the agent sends one job after the other), in
    one __main__ namespace that outlives the jobs. The agent supervises the kernel's process group
    as the job's: a timeout sends SIGINT (KeyboardInterrupt in the job, which ends as an exception
    does, the namespace kept); a job still on 2 s later, a cancel or an output limit kills the kernel,
    and the next job goes to a new one.
    """

    def __init__(self, socket_path, agent_pid):
        super().__init__(socket_path, agent_pid)
        # The kernel's own stdio (stdin: the agent's pipe, whose end of file retires the kernel;
        # stdout and stderr: the agent's log) waits on other fds while a job's pipes are on 0-2.
        self._own_fds = [os.dup(fd) for fd in range(3)]
        self._own_streams = (sys.stdin, sys.stdout, sys.stderr)
        self._main = _new_main_module()
        # The agent interrupts a job that hit its timeout with SIGINT: KeyboardInterrupt in the job's
        # code only, never in the kernel's own (a late signal after the job is ignored).
        import signal
        signal.signal(signal.SIGINT, _interrupt_job)
        global _server_module
        _server_module = sys.modules.get("__main__")  # keeps the kernel's globals alive
        sys.modules["__main__"] = self._main
        # Notebook code calls display(obj) without importing it (IPython puts it in builtins).
        import builtins
        if not hasattr(builtins, "display"):
            builtins.display = _display

    def serve(self):
        """Runs jobs until the agent closes the kernel's stdin."""
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._own_fds[0], selectors.EVENT_READ, "stdin")
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        while True:
            for key, _ in self._selector.select():
                if key.data == "accept":
                    self._serve_one()
                elif not os.read(self._own_fds[0], 4096):
                    return

    def _serve_one(self):
        taken = self._take_job()
        if taken is None:
            return
        connection, job = taken
        _send(connection, f"pid {os.getpid()}\n")
        code, result = self._run(job)
        for bundle in _job_displays:
            _send(connection, f"display {json.dumps(bundle)}\n")
        _job_displays.clear()
        if result is not None:
            text, data = result
            _send(connection, f"result {json.dumps(text)}\n")
            if data:
                _send(connection, f"data {json.dumps(data)}\n")
        _send(connection, f"status {(code & 0xFF) << 8}\n")
        connection.close()

    def _run(self, job):
        """Runs one job on its pipes, then puts the kernel's stdio back; returns (exit code, result repr)."""
        fds = job["fds"]
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in set(fds):
            if fd > 2:
                os.close(fd)
        own_in, own_out, own_err = self._own_streams
        streams = (_reopen(0, own_in, writing=False), _reopen(1, own_out, writing=True), _reopen(2, own_err, writing=True))
        sys.stdin, sys.stdout, sys.stderr = sys.__stdin__, sys.__stdout__, sys.__stderr__ = streams
        code, result = 127, None
        global _rich_left, _rich_job
        _rich_left = _MAX_RICH_BYTES
        _rich_job = bool(job.get("rich_results"))
        _job_displays.clear()
        try:
            path = _enter_job(job)
            if path is not None:
                save_figures = bool(job.get("save_figures"))
                _prepare_figures(save_figures)
                code, result = _run_in_namespace(path, self._main)
                if save_figures:
                    _save_figures(job.get("outputs"))
        finally:
            # Everything the job wrote must be in its pipes before they close: also what it left
            # in replaced sys.std* objects or in C stdio buffers.
            flushed = _flush() and all(_flush_stream(stream) for stream in streams[1:])
            _flush_c_stdio()
            sys.stdin, sys.stdout, sys.stderr = sys.__stdin__, sys.__stdout__, sys.__stderr__ = self._own_streams
            for fd, own in enumerate(self._own_fds):
                os.dup2(own, fd, inheritable=True)
        if not flushed and code == 0:
            code = 120  # what the interpreter exits with when it cannot flush stdout
        return code, result


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

    path = _enter_job(job)
    if path is None:
        sys.exit(127)
    # The random module reseeds itself after fork; numpy's global generator does not.
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        try:
            numpy_random.seed()
        except Exception:
            pass
    save_figures = bool(job.get("save_figures"))
    _prepare_figures(save_figures)
    code = _run_main(path)
    if save_figures:
        _save_figures(job.get("outputs"))
    _exit(code)


def _enter_job(job):
    """Takes on the job's environment, cwd, argv and sys.path[0]; returns the script's absolute path, or None."""
    os.environ.clear()
    os.environ.update(job["env"])
    try:
        os.chdir(job["cwd"])
    except OSError as e:
        print(f"sandboxvm fork server: cannot enter {job['cwd']}: {e}", file=sys.stderr)
        return None
    script = job["script"]
    path = os.path.abspath(script)
    sys.argv = [script, *job["args"]]
    if not (sys.flags.isolated or getattr(sys.flags, "safe_path", False)):
        sys.path[0] = os.path.dirname(path)
    return path


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


def _new_main_module():
    import builtins
    import types

    module = types.ModuleType("__main__")
    module.__cached__ = None
    module.__builtins__ = builtins
    return module


def _run_main(path):
    """Runs the file as __main__ the way `python3 FILE` does; returns the exit code."""
    import importlib.machinery

    module = _new_main_module()
    module.__file__ = path
    module.__loader__ = importlib.machinery.SourceFileLoader("__main__", path)
    global _server_module
    _server_module = sys.modules.get("__main__")  # keeps the server's globals alive under the script
    sys.modules["__main__"] = module
    source = _read_source(path)
    if source is None:
        return 2
    try:
        exec(compile(source, path, "exec", dont_inherit=True), module.__dict__)
    except SystemExit as e:
        return _system_exit_code(e)
    except BaseException as e:
        _print_exception(e)
        if isinstance(e, KeyboardInterrupt):
            import signal
            _flush()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        return 1
    return 0


def _run_in_namespace(path, module):
    """
    Kernel: runs the file in the kept __main__ namespace; returns (exit code, repr of the final
    expression or None). A final expression statement is evaluated on its own (same file name, so
    tracebacks name the right lines); whatever ran before an exception stays in the namespace.
    """
    import importlib.machinery

    module.__file__ = path
    module.__loader__ = importlib.machinery.SourceFileLoader("__main__", path)
    source = _read_source(path)
    if source is None:
        return 2, None
    _remember_source(path, source)
    global _in_job
    try:
        body, last = _compile_parts(source, path)
        _in_job = True
        exec(body, module.__dict__)
        if last is None:
            return 0, None
        value = eval(last, module.__dict__)
        if value is None:
            return 0, None
        text = _capped_repr(value)
        data = _mime_bundle(value, text) if _rich_job else None
        return 0, (text, data)
    except SystemExit as e:
        return _system_exit_code(e), None
    except BaseException as e:  # KeyboardInterrupt too: the kernel goes on
        _in_job = False
        _print_exception(e)
        return 1, None
    finally:
        _in_job = False


# Kernel: true while a job's own code runs (set and cleared around it in _run_in_namespace).
_in_job = False


def _interrupt_job(signum, frame):
    if _in_job:
        raise KeyboardInterrupt


def _compile_parts(source, path):
    """Code of the file without its final expression statement, and that expression's code (or None)."""
    import ast
    import __future__

    tree = compile(source, path, "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    body = compile(tree, path, "exec", dont_inherit=True)
    if last is None:
        return body, None
    # The expression is compiled on its own: it needs the file's __future__ imports passed in.
    flags = 0
    for statement in tree.body:
        if isinstance(statement, ast.ImportFrom) and statement.module == "__future__":
            for alias in statement.names:
                feature = getattr(__future__, alias.name, None)
                flags |= getattr(feature, "compiler_flag", 0)
    return body, compile(last, path, "eval", flags, dont_inherit=True)


# Kernel: whether the job asked for rich results, what display() was given during it, and the rich bytes
# it may still add.
_rich_job = False
_job_displays = []
_rich_left = _MAX_RICH_BYTES


def _display(*objs, **kwargs):
    """
    IPython's display() for the kernel: with rich results each object's representations go back with the
    job's results; otherwise its repr is printed, as IPython's display does outside a notebook.
    """
    if not _rich_job:
        for obj in objs:
            print(repr(obj))
        return
    for obj in objs:
        if len(_job_displays) >= _MAX_DISPLAYS:
            break
        bundle = _mime_bundle(obj, _capped_repr(obj))
        if bundle:
            _job_displays.append(bundle)


def _mime_bundle(value, text):
    """
    value by MIME type: text/plain (text) and what its _repr_*_ methods (or _repr_mimebundle_) give, plus
    a PNG of a matplotlib figure; each kept while the job's rich budget lasts, else left out. A method
    that raises or returns something else than text or bytes is skipped, as IPython does.
    """
    global _rich_left
    found = {}
    if not isinstance(value, type):
        mimebundle = getattr(value, "_repr_mimebundle_", None)
        if callable(mimebundle):
            try:
                got = mimebundle(include=None, exclude=None)
                if isinstance(got, tuple):
                    got = got[0]
                if isinstance(got, dict):
                    found.update((k, v) for k, v in got.items() if isinstance(k, str))
            except Exception:
                pass
        for mime, name in _REPR_METHODS:
            if mime in found:
                continue
            method = getattr(value, name, None)
            if not callable(method):
                continue
            try:
                got = method()
            except Exception:
                continue
            if isinstance(got, tuple) and got:
                got = got[0]  # (data, metadata)
            if got is not None:
                found[mime] = got
        if "image/png" not in found:
            png = _figure_png(value)
            if png is not None:
                found["image/png"] = png
    bundle = {}
    for mime, got in [("text/plain", text), *found.items()]:
        if mime == "text/plain" and mime in bundle:
            continue
        if isinstance(got, (bytes, bytearray)):
            import base64
            got = base64.b64encode(got).decode("ascii") if mime.startswith("image/") else bytes(got).decode("utf-8", "replace")
        elif mime == "application/json" and not isinstance(got, str):
            try:
                got = json.dumps(got)
            except (TypeError, ValueError):
                continue
        elif not isinstance(got, str):
            continue
        size = len(json.dumps(got)) + len(mime) + 6
        if size > _rich_left:
            continue
        _rich_left -= size
        bundle[mime] = got
    return bundle


def _figure_png(value):
    """PNG bytes of a matplotlib figure (which has no _repr_png_ outside IPython), or None."""
    figure_module = sys.modules.get("matplotlib.figure")
    if figure_module is None or not isinstance(value, getattr(figure_module, "Figure", ())):
        return None
    try:
        buffer = io.BytesIO()
        value.savefig(buffer, format="png")
        return buffer.getvalue()
    except Exception:
        return None


def _capped_repr(value):
    """repr(value) as valid UTF-8 text of at most _MAX_REPR_BYTES, marked when it was cut."""
    data = repr(value).encode("utf-8", "backslashreplace")
    if len(data) <= _MAX_REPR_BYTES:
        return data.decode("utf-8")
    kept = data[:_MAX_REPR_BYTES].decode("utf-8", "ignore")
    return f"{kept}... [repr truncated: {len(data)} bytes]"


def _read_source(path):
    """The file's bytes, or None after the message the interpreter prints for a missing script."""
    try:
        with io.open_code(path) as f:
            return f.read()
    except OSError as e:
        print(f"{sys.executable}: can't open file {path!r}: [Errno {e.errno}] {e.strerror}", file=sys.stderr)
        return None


def _remember_source(path, source):
    """
    Kernel: tracebacks show the lines that ran, even when the file is rewritten (same size, same
    mtime tick) for the next job: linecache keeps entries without an mtime as they are.
    """
    import importlib.util
    import linecache

    try:
        text = importlib.util.decode_source(source)
    except Exception:
        return  # compile reports it
    linecache.cache[path] = (len(text), None, text.splitlines(True), path)


def _print_exception(e):
    """Prints the usual traceback of an uncaught exception, starting in the script, not in this file."""
    tb = e.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == _SERVER_FILE:
        tb = tb.tb_next
    e.__traceback__ = tb  # the default hook prints the exception's own traceback
    try:
        sys.excepthook(type(e), e, tb)
    except BaseException:
        import traceback
        traceback.print_exception(type(e), e, tb)


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
        ok = _flush_stream(stream) and ok
    return ok


def _flush_stream(stream):
    try:
        if stream is not None:
            stream.flush()
        return True
    except Exception:
        return False


def _flush_c_stdio():
    """Kernel: output that C code left in libc's stdio buffers goes to the job's pipes, not the next job's."""
    global _libc
    try:
        if _libc is None:
            import ctypes
            _libc = ctypes.CDLL(None)
        _libc.fflush(None)
    except Exception:
        pass


_FIGURE_FILE = re.compile(r"figure-([0-9]+)\.png")
# Whether the current job saves its figures (read by the plt.show() replacement).
_figures_wanted = False


def _prepare_figures(wanted):
    """Makes plt.show() leave figures open under Agg while the job saves figures, once pyplot is imported."""
    global _figures_wanted
    _figures_wanted = wanted
    if not wanted:
        return
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        _patch_show(pyplot)
    elif not any(isinstance(finder, _PyplotImportHook) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PyplotImportHook())


class _PyplotImportHook:
    """A meta path finder that patches matplotlib.pyplot right after it is imported, then leaves."""

    def find_spec(self, name, path, target=None):
        if name != "matplotlib.pyplot":
            return None
        for finder in list(sys.meta_path):
            find_spec = getattr(finder, "find_spec", None)
            if finder is self or find_spec is None:
                continue
            spec = find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        hook = self

        def exec_module(module):
            del loader.exec_module  # the loader's own method again
            if hook in sys.meta_path:
                sys.meta_path.remove(hook)
            loader.exec_module(module)
            _patch_show(module)

        loader.exec_module = exec_module
        return spec


def _patch_show(pyplot):
    """Replaces pyplot.show (once); a failure is reported and leaves matplotlib's own show()."""
    original = getattr(pyplot, "show", None)
    if original is None or getattr(original, "_sandboxvm_original", None) is not None:
        return

    def show(*args, **kwargs):
        # Agg cannot show anything; the figures stay open so that they are saved after the job.
        matplotlib = sys.modules.get("matplotlib")
        if _figures_wanted and matplotlib is not None and str(matplotlib.get_backend()).lower() == "agg":
            return None
        return original(*args, **kwargs)

    try:
        import functools
        functools.update_wrapper(show, original)
        show._sandboxvm_original = original
        pyplot.show = show
    except Exception as e:
        print(f"sandboxvm: cannot replace plt.show(): {type(e).__name__}: {e}", file=sys.stderr)
    _mark_saved_figures()


def _mark_saved_figures():
    """Marks a figure the script saved itself, so it is not saved a second time as figure-N.png."""
    figure_module = sys.modules.get("matplotlib.figure")
    figure_class = getattr(figure_module, "Figure", None)
    original = getattr(figure_class, "savefig", None)
    if original is None or getattr(original, "_sandboxvm_original", None) is not None:
        return

    def savefig(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        self._sandboxvm_saved = True
        return result

    try:
        import functools
        functools.update_wrapper(savefig, original)
        savefig._sandboxvm_original = original
        figure_class.savefig = savefig
    except Exception as e:
        print(f"sandboxvm: cannot watch savefig(): {type(e).__name__}: {e}", file=sys.stderr)


def _save_figures(outputs):
    """
    Saves every open matplotlib figure as OUTPUTS/figure-N.png, in figure-number order, N counting on
    from the highest already there, and closes it; a figure the script saved itself is only closed.
    Problems are reported on stderr; the exit status stays the script's.
    """
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None or not outputs:
        return
    try:
        numbers = sorted(pyplot.get_fignums())
        if not numbers:
            return
        os.makedirs(outputs, exist_ok=True)
        taken = [int(m.group(1)) for m in map(_FIGURE_FILE.fullmatch, os.listdir(outputs)) if m]
    except Exception as e:
        print(f"sandboxvm: cannot save figures: {type(e).__name__}: {e}", file=sys.stderr)
        return
    last = max(taken, default=0)
    for number in numbers:
        try:
            figure = pyplot.figure(number)
            if getattr(figure, "_sandboxvm_saved", False):
                continue
            figure.savefig(os.path.join(outputs, f"figure-{last + 1}.png"))
            last += 1
        except Exception as e:
            print(f"sandboxvm: cannot save figure {number}: {type(e).__name__}: {e}", file=sys.stderr)
        finally:
            try:
                pyplot.close(number)
            except Exception:
                pass


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
_libc = None

if __name__ == "__main__":
    main()
