"""The sandbox every student kernel runs in while a class is graded.

    settings = SandboxSettings(uid=61000, hide=[root / "solutions"], memory_mb=4096)
    install(settings)                      # in a grading worker, before nbgrader starts kernels
    # nbgrader's Execute preprocessor then uses SandboxKernelManager (see config: kernel_manager_class)

The kernel manager prefixes the kernel's command with `python -m autograder.sandbox SETTINGS -- ...`;
this module's `main` (the *launcher*) then, still as the grader:

1. copies the notebook's folder (data files, not notebooks) into a private work dir `workdir/work`;
2. forks the kernel process, which
   - when run as root: enters new mount and network namespaces (no network at all, not even
     loopback), hides `settings.hide` (solutions/, the gradebook, the submissions, the output folder)
     and the grader's home behind empty tmpfs mounts (re-binding read-only only what Python needs),
     gets a fresh small /tmp, /var/tmp and /dev/shm, and drops to the unprivileged uid `settings.uid`;
   - sets resource limits: address space (memory), process count (root only: it counts per uid),
     file size, CPU seconds, no core dumps;
   - gets a clean environment (no credentials, HOME = its work dir) and execs the ipykernel;
3. waits at most `settings.notebook_timeout` seconds, then kills every process of the sandbox uid.

The kernel talks to the grader over Unix sockets in its work dir (ZeroMQ `ipc` transport), which
cross the network namespace. Without root only the resource limits (no process limit), the
private work dir, the clean environment and the time limit apply.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Linux constants (sched.h, mount.h, prctl.h)
CLONE_NEWNS, CLONE_NEWNET = 0x00020000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies (no orphans)."""
    _libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


@dataclass
class SandboxSettings:
    """Limits and isolation for one kernel. `uid=None`: no user switch and no namespaces."""

    uid: int | None = None  # the unprivileged uid kernels run as (root only)
    cell_timeout: int = 120  # seconds per cell (enforced by nbclient, in the grader)
    notebook_timeout: int = 900  # wall-clock seconds for the whole kernel (enforced by the launcher)
    memory_mb: int = 4096  # RLIMIT_AS
    max_processes: int = 128  # RLIMIT_NPROC, per uid (threads count; a chapter's kernel uses ~20); root only
    max_file_mb: int = 512  # RLIMIT_FSIZE and the size of the private /tmp
    max_output_mb: int = 8  # output kept per cell (enforced by the grader, see kernelguard)
    hide: list[str] = field(default_factory=list)  # folders the kernel must not see
    keep_readable: list[str] = field(default_factory=list)  # folders inside the grader's home it needs
    python_path: list[str] = field(default_factory=list)  # PYTHONPATH of the kernel
    course_home: str = ""  # the course cache (LLM_LIB_HOME) kernels read artifacts from, instead of their own HOME's
    base: str = ""  # where per-kernel work dirs are made (a folder only the grader can list)
    workdir: str = ""  # set per kernel by SandboxKernelManager

    @property
    def isolated(self) -> bool:
        return self.uid is not None

    def describe(self) -> str:
        parts = [
            f"{self.cell_timeout}s per cell",
            f"{self.notebook_timeout}s per notebook",
            f"{self.memory_mb} MiB address space",
            f"{self.max_file_mb} MiB per file",
            f"{self.max_output_mb} MiB output per cell",
            "private work dir",
        ]
        if self.isolated:
            parts += [f"uid {self.uid}", f"{self.max_processes} processes", "no network", f"{len(self.hide)} folders hidden"]
        else:
            parts += ["NOT isolated: same user, network and file access as the grader (run as root to isolate)"]
        return ", ".join(parts)


_SETTINGS: SandboxSettings | None = None


def install(settings: SandboxSettings) -> None:
    """Make SandboxKernelManager use `settings` in this process (a grading worker)."""
    global _SETTINGS
    Path(settings.base).mkdir(parents=True, exist_ok=True)
    os.chmod(settings.base, 0o711)  # kernels may traverse it to reach their own dir, not list it
    _SETTINGS = settings


def new_workdir(settings: SandboxSettings) -> Path:
    """A fresh work dir for one kernel, owned by the sandbox uid."""
    path = Path(tempfile.mkdtemp(prefix="k-", dir=settings.base))
    if settings.isolated:
        os.chown(path, settings.uid, settings.uid)
    return path


def __getattr__(name: str):
    # The kernel manager needs jupyter_client (0.15 s to import); the launcher below, which runs
    # once per kernel, does not: the class is made on first use, in the grading worker.
    if name == "SandboxKernelManager":
        return _kernel_manager_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _kernel_manager_class():
    from jupyter_client.manager import AsyncKernelManager

    class SandboxKernelManager(AsyncKernelManager):
        """A kernel manager whose kernels start through the sandbox launcher (`install` first)."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if _SETTINGS is None:
                raise RuntimeError("autograder.sandbox.install(settings) was not called in this process")
            self.sandbox = SandboxSettings(**{**asdict(_SETTINGS), "workdir": str(new_workdir(_SETTINGS))})
            if self.sandbox.isolated:  # TCP on loopback does not cross the network namespace; Unix sockets do
                self.transport = "ipc"
                self.ip = str(Path(self.sandbox.workdir) / "zmq")

        def format_kernel_cmd(self, extra_arguments=None):
            cmd = super().format_kernel_cmd(extra_arguments)
            return [sys.executable, "-m", "autograder.sandbox", json.dumps(asdict(self.sandbox)), "--", *cmd]

    return SandboxKernelManager


UID_SPAN = 1000  # how many uids above the base a grading run may claim


def claim_uid(base: int) -> tuple[int, int]:
    """(uid, fd): the first uid >= `base` no other grader on this machine holds, locked for as long
    as `fd` stays open (this process's life). Two class runs at once (two instructors, or two test
    workers) must never share a uid: cleaning up one uid kills every process of it."""
    import fcntl

    folder = "/run/lock" if os.access("/run/lock", os.W_OK) else tempfile.gettempdir()
    for uid in range(base, base + UID_SPAN):
        fd = os.open(os.path.join(folder, f"autograder-uid-{uid}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return uid, fd
        except BlockingIOError:
            os.close(fd)
    raise RuntimeError(f"all sandbox uids {base}..{base + UID_SPAN - 1} are in use by other grading runs; wait for one to end")


def kill_uid(uid: int) -> None:
    """SIGKILL every process of `uid` (a fork bomb's children included), from a helper process."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(uid)
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)  # as uid: every process that uid may signal, i.e. its own
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def cleanup(settings: SandboxSettings) -> None:
    """After a submission: no process of the sandbox uid left, no work dir left."""
    if settings.isolated:
        kill_uid(settings.uid)
    for entry in Path(settings.base).iterdir():
        shutil.rmtree(entry, ignore_errors=True)


def probe(settings: SandboxSettings, timeout: int = 120) -> str:
    """Start a Python that imports the course's packages in this sandbox; "" if it works, else why
    not (e.g. a container that forbids namespaces, a Python the sandbox uid cannot read)."""
    import subprocess
    from dataclasses import replace

    base, cwd = tempfile.mkdtemp(prefix="autograder-probe-"), tempfile.mkdtemp(prefix="autograder-probe-cwd-")
    lock = None
    try:
        os.chmod(base, 0o711)
        trial = replace(settings, base=base)
        if settings.isolated:
            trial.uid, lock = claim_uid(settings.uid)
        trial.workdir = str(new_workdir(trial))
        command = [sys.executable, "-c", "import autograder.checks, llm_lib"]
        run = subprocess.run(
            [sys.executable, "-m", "autograder.sandbox", json.dumps(asdict(trial)), "--", *command],
            cwd=cwd, capture_output=True, text=True, timeout=timeout,
        )
        return "" if run.returncode == 0 else (run.stderr.strip().splitlines() or [f"exit status {run.returncode}"])[-1]
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        if lock is not None:
            kill_uid(trial.uid)
            os.close(lock)
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(cwd, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# The launcher (runs as the grader, between the kernel manager and the kernel)


def _kernel_env(s: SandboxSettings, work: Path) -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "LLM_LIB_HOME", "HF_HOME", "TZ")
    env = {k: v for k, v in os.environ.items() if k in keep or k.startswith("JPY_")}  # JPY_PARENT_PID: die with us
    user = f"sandbox{s.uid}" if s.isolated else os.environ.get("USER", "student")
    env.update(
        HOME=str(work),
        TMPDIR="/tmp" if s.isolated else str(work),
        USER=user,
        LOGNAME=user,
        PYTHONPATH=os.pathsep.join(s.python_path),
        **({"LLM_LIB_HOME": s.course_home} if s.course_home else {}),
        MPLBACKEND="Agg",
        MPLCONFIGDIR=str(work / ".config" / "matplotlib"),
        IPYTHONDIR=str(work / ".ipython"),
        OMP_NUM_THREADS="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def _isolate(s: SandboxSettings, workdir: Path) -> None:
    """New mount + network namespaces; hide what the kernel must not read (root only)."""
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWNET), "unshare")
    _mount("none", "/", None, MS_REC | MS_PRIVATE)
    home = Path(os.path.expanduser("~")).resolve()
    scratch = [Path(p) for p in ("/tmp", "/var/tmp", "/dev/shm") if Path(p).is_dir()]
    covered = scratch + ([home] if home != Path("/") else [])  # what the tmpfs mounts below replace
    needed = sorted({Path(p).resolve() for p in s.keep_readable}, key=lambda p: len(p.parts))
    # Only what lives under a covered folder must be bound back (a checkout or venv under /tmp, say).
    needed = [p for p in needed if p.exists() and any(p == c or c in p.parents for c in covered)]
    # Keep handles on what will be hidden, so it can be bound back afterwards.
    fds = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in needed + [workdir]}
    if home != Path("/"):
        _mount("tmpfs", str(home), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    size = f"size={s.max_file_mb}m"
    for p in scratch:
        _mount("tmpfs", str(p), "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,{size}")
    for p in needed:  # parents first, so a child's mount point exists inside its parent's bind
        p.mkdir(parents=True, exist_ok=True)
        _mount(f"/proc/self/fd/{fds[p]}", str(p), None, MS_BIND | MS_REC)
        _mount("none", str(p), None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    for p in s.hide:  # after the binds, so a hidden folder inside a bound one stays hidden
        if Path(p).is_dir():
            _mount("tmpfs", p, "tmpfs", MS_NOSUID | MS_NODEV | MS_RDONLY, "mode=0000,size=4k")
        elif Path(p).is_file():  # e.g. the zip of all submissions
            _mount("/dev/null", p, None, MS_BIND)
    # The work dir may have lived under /tmp: bind it back at the same path.
    workdir.mkdir(parents=True, exist_ok=True)
    _mount(f"/proc/self/fd/{fds[workdir]}", str(workdir), None, MS_BIND)
    for fd in fds.values():
        os.close(fd)


def _limits(s: SandboxSettings) -> None:
    import resource

    mib = 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (s.memory_mb * mib, s.memory_mb * mib))
    resource.setrlimit(resource.RLIMIT_FSIZE, (s.max_file_mb * mib, s.max_file_mb * mib))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (s.notebook_timeout + 5, s.notebook_timeout + 10))
    if s.isolated:  # per uid: only meaningful for a uid of its own
        resource.setrlimit(resource.RLIMIT_NPROC, (s.max_processes, s.max_processes))


def _prepare_workdir(s: SandboxSettings, argv: list[str]) -> tuple[Path, list[str]]:
    """Copy the notebook's folder (no notebooks) and the connection file into the work dir."""
    workdir = Path(s.workdir)
    work = workdir / "work"
    shutil.copytree(os.getcwd(), work, ignore=shutil.ignore_patterns("*.ipynb", ".*"), dirs_exist_ok=True)
    argv = list(argv)
    if "-f" in argv:
        i = argv.index("-f") + 1
        conn = workdir / "connection.json"
        shutil.copyfile(argv[i], conn)
        argv[i] = str(conn)
    for dirpath, dirnames, filenames in os.walk(workdir):
        for name in [dirpath, *[os.path.join(dirpath, n) for n in dirnames + filenames]]:
            if s.isolated:
                os.chown(name, s.uid, s.uid)
    return work, argv


def _child(s: SandboxSettings, work: Path, argv: list[str]) -> None:
    die_with_parent()
    env = _kernel_env(s, work)
    if s.isolated:
        _isolate(s, Path(s.workdir))
    _limits(s)
    if s.isolated:
        os.setgroups([])
        os.setgid(s.uid)
        os.setuid(s.uid)
        die_with_parent()  # a change of credentials clears the parent-death signal: set it again
    os.chdir(work)
    os.execve(argv[0], argv, env)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m autograder.sandbox SETTINGS_JSON -- COMMAND...", file=sys.stderr)
        return 2
    s = SandboxSettings(**json.loads(argv[0]))
    work, command = _prepare_workdir(s, argv[2:])
    die_with_parent()
    pid = os.fork()
    if pid == 0:
        try:
            _child(s, work, command)
        except BaseException as exc:  # the kernel never started: say why on stderr
            print(f"autograder.sandbox: cannot start the kernel: {exc}", file=sys.stderr)
        os._exit(127)

    # The grader interrupts a kernel with SIGINT to its process group (the child gets it too).
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def stop(signum, frame):
        _kill(s, pid)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    deadline = time.monotonic() + s.notebook_timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            _kill(s, pid)  # whatever it left running
            return os.waitstatus_to_exitcode(status) if status else 0
        if time.monotonic() > deadline:
            print(f"autograder.sandbox: notebook time limit ({s.notebook_timeout}s) reached; kernel killed", file=sys.stderr)
            _kill(s, pid)
            return 137
        time.sleep(0.1)


def _kill(s: SandboxSettings, pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if s.isolated:
        kill_uid(s.uid)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
