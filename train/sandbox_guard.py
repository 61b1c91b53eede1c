"""The first code of every sandboxed interpreter: isolate this process, run the program, prove a pass.

train/sandbox.py starts it as `python -I -S sandbox_guard.py MODE MEMORY_MB CPU_S SETUP_FD ENTRY` in the
program's own directory (program.py; test.py with a test). Standard library only; never imported.

Isolation, strongest first (what ran goes to the parent as JSON on SETUP_FD, then that fd is closed):
- network: a new network namespace (MODE netns, or userns+netns), else none ("audit-hook");
- user: as root, the program runs as nobody (65534) when the interpreter's files are readable by others
  (a rented container's /usr or /opt/conda); non-root: RLIMIT_NPROC 0, so no new process or thread;
- seccomp (x86_64, aarch64): the kernel refuses process creation (fork, clone, exec), sockets, ptrace,
  signals to other processes, mknod, mounts and namespaces, io_uring, file-handle opens, *at calls
  relative to a directory fd (the audit hook sees paths, never the directory they are relative to), and
  new executable memory (a shared object the program wrote cannot be loaded; the standard library's are
  mapped beforehand). As root, a program never runs without it;
- an audit hook (PEP 578, cannot be removed from Python) that refuses sockets, processes, ctypes,
  _posixsubprocess, sub-interpreters, code-object construction, writes outside the program's directory
  and reads outside it and the standard library. It calls only functions captured before the program
  ran, and looks at arguments only after checking their exact type, so a monkeypatched module or an
  argument with its own __eq__ or __fspath__ never runs inside it.

The verdict: the parent counts a program as passed only when this process stopped itself with SIGSTOP
from `finish`, right after check(entry_point) returned. The hook lets that one os.kill through only from
the frame of `finish` that announced the genuine check (test.py's own `check`, in the program's
namespace) before calling it; tracing, which could rewrite a frame's locals, is refused. Every other ending
- exit code 0 included: sys.exit, os._exit, unittest.main(), exit hooks, an exception - is failed.
No secret exists in this process to steal: the proof is an event only that frame can cause.
Without a test (a plain program), `done` stops the process once the program ran to its end.
"""

import os
import sys

NOBODY = 65534
SIGSTOP = 19  # Linux (x86_64 and aarch64); the signal module itself stays out of the program's reach
DENY_EVENTS = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
               "os.forkpty", "os.killpg", "os.chdir", "ctypes.", "pty.", "signal.", "webbrowser.",
               "code.__new__", "marshal.load", "cpython.PyInterpreterState_New", "cpython._PySys_ClearAuditHooks",
               "resource.setrlimit", "resource.prlimit", "sqlite3.", "gc.get_", "sys.settrace", "sys.setprofile",
               "sys._settraceallthreads", "sys._setprofileallthreads", "sys.monitoring", "sys._current_frames",
               "os.add_dll_directory", "os.startfile", "winreg.", "_winapi.", "msvcrt.", "ensurepip.")
# modules that reach the kernel or other files without an audit event (or unmarshal code)
DENY_MODULES = frozenset((
    "ctypes", "_ctypes", "cffi", "_cffi_backend", "_posixsubprocess", "subprocess", "multiprocessing",
    "_multiprocessing", "_posixshmem", "_xxsubinterpreters", "_xxinterpchannels", "_interpreters",
    "_interpchannels", "_interpqueues", "_testcapi", "_testinternalcapi", "_testbuffer", "_testimportmultiple",
    "_testmultiphase", "_testsinglephase", "_testclinic", "_ctypes_test", "_xxtestfuzz",
    "sqlite3", "_sqlite3", "dbm", "_dbm", "_gdbm", "readline", "_curses", "_curses_panel", "syslog", "pty",
    "socket", "_socket", "ssl", "_ssl"))
# path arguments and directory-fd arguments of the events that change files (CPython's audit table)
PATH_EVENTS = {"os.remove": ((0,), (1,)), "os.rmdir": ((0,), (1,)), "os.rename": ((0, 1), (2, 3)),
               "os.mkdir": ((0,), (2,)), "os.chmod": ((0,), (2,)), "os.chown": ((0,), (3,)),
               "os.truncate": ((0,), ()), "os.symlink": ((0, 1), (2,)), "os.link": ((0, 1), (2, 3)),
               "os.utime": ((0,), (3,)), "os.setxattr": ((0,), ()), "os.removexattr": ((0,), ()),
               "shutil.rmtree": ((0,), (1,)), "shutil.move": ((0, 1), ()), "shutil.copyfile": ((1,), ()),
               "shutil.copymode": ((1,), ()), "shutil.copystat": ((1,), ()), "shutil.copytree": ((1,), ()),
               "shutil.chown": ((0,), ()), "shutil.make_archive": ((0,), ())}

# --- seccomp ------------------------------------------------------------------------------------------

# (audit arch, syscalls refused outright, syscalls whose directory-fd arguments must be AT_FDCWD and their
# numbers, kill, the calls that map memory executable)
SYSCALLS = {
    "x86_64": (0xC000003E, {
        "socket": 41, "socketpair": 53, "clone": 56, "fork": 57, "vfork": 58, "execve": 59, "execveat": 322,
        "clone3": 435, "tkill": 200, "tgkill": 234, "ptrace": 101, "process_vm_readv": 310,
        "process_vm_writev": 311, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "pidfd_open": 434, "pidfd_send_signal": 424, "pidfd_getfd": 438, "unshare": 272, "setns": 308,
        "mount": 165, "umount2": 166, "chroot": 161, "pivot_root": 155, "bpf": 321, "perf_event_open": 298,
        "userfaultfd": 323, "open_by_handle_at": 304, "name_to_handle_at": 303, "keyctl": 250, "add_key": 248,
        "request_key": 249, "init_module": 175, "finit_module": 313, "delete_module": 176, "kexec_load": 246,
        "kexec_file_load": 320, "reboot": 169, "swapon": 167, "swapoff": 168, "mknod": 133, "mknodat": 259,
        "move_mount": 429, "open_tree": 428, "fsopen": 430, "fsmount": 432, "fsconfig": 431, "fspick": 433,
        "mount_setattr": 442, "quotactl": 179, "acct": 163},
        {"openat": (0,), "mkdirat": (0,), "fchownat": (0,), "futimesat": (0,), "unlinkat": (0,),
         "renameat": (0, 2), "linkat": (0, 2), "symlinkat": (1,), "fchmodat": (0,), "utimensat": (0,),
         "renameat2": (0, 2), "openat2": (0,), "fchmodat2": (0,)},
        {"openat": 257, "mkdirat": 258, "fchownat": 260, "futimesat": 261, "unlinkat": 263, "renameat": 264,
         "linkat": 265, "symlinkat": 266, "fchmodat": 268, "utimensat": 280, "renameat2": 316, "openat2": 437,
         "fchmodat2": 452}, 62, (9, 10, 329)),  # kill; mmap, mprotect, pkey_mprotect
    "aarch64": (0xC00000B7, {
        "socket": 198, "socketpair": 199, "clone": 220, "execve": 221, "execveat": 281, "clone3": 435,
        "tkill": 130, "tgkill": 131, "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "pidfd_open": 434,
        "pidfd_send_signal": 424, "pidfd_getfd": 438, "unshare": 97, "setns": 268, "mount": 40, "umount2": 39,
        "chroot": 51, "pivot_root": 41, "bpf": 280, "perf_event_open": 241, "userfaultfd": 282,
        "open_by_handle_at": 265, "name_to_handle_at": 264, "keyctl": 219, "add_key": 217, "request_key": 218,
        "init_module": 105, "finit_module": 273, "delete_module": 106, "kexec_load": 104, "kexec_file_load": 294,
        "reboot": 142, "swapon": 224, "swapoff": 225, "mknodat": 33, "move_mount": 429, "open_tree": 428,
        "fsopen": 430, "fsmount": 432, "fsconfig": 431, "fspick": 433, "mount_setattr": 442, "quotactl": 60,
        "acct": 89},
        {"openat": (0,), "mkdirat": (0,), "fchownat": (0,), "unlinkat": (0,), "renameat": (0, 2),
         "linkat": (0, 2), "symlinkat": (1,), "fchmodat": (0,), "utimensat": (0,), "renameat2": (0, 2),
         "openat2": (0,), "fchmodat2": (0,)},
        {"openat": 56, "mkdirat": 34, "fchownat": 54, "unlinkat": 35, "renameat": 38, "linkat": 37,
         "symlinkat": 36, "fchmodat": 53, "utimensat": 88, "renameat2": 276, "openat2": 437, "fchmodat2": 452},
        129, (222, 226, 288)),
}
AT_FDCWD = 0xFFFFFF9C  # -100 as the low 32 bits the kernel reads
ALLOW, DENY = 0x7FFF0000, 0x00050000 | 1  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | EPERM


def seccomp_program(machine: str, pid: int) -> bytes:
    """The classic-BPF filter (struct sock_filter[]): a list of (code, jt, jf, k) with labels resolved."""
    import struct

    arch, refused, dirfd_args, dirfd_nr, kill_nr, exec_nr = SYSCALLS[machine]
    ld = lambda off: (0x20, 0, 0, off)  # noqa: E731 - BPF_LD|BPF_W|BPF_ABS from struct seccomp_data
    code: list = [ld(4), (0x15, 1, 0, arch), (0x06, 0, 0, DENY), ld(0)]  # another ABI: refused
    if machine == "x86_64":
        code.append((0x35, "deny", 0, 0x40000000))  # JGE: x32 syscalls
    code += [(0x15, "deny", 0, nr) for nr in refused.values()]
    for name, args in dirfd_args.items():  # JEQ nr else skip the block; each dir fd must be AT_FDCWD
        block = [x for a in args for x in (ld(16 + 8 * a), (0x15, 0, "deny", AT_FDCWD))] + [(0x06, 0, 0, ALLOW)]
        code += [(0x15, 0, len(block), dirfd_nr[name])] + block
    block = [ld(16 + 8 * 2), (0x45, "deny", 0, 4), (0x06, 0, 0, ALLOW)]  # JSET PROT_EXEC in prot (arg 2)
    for nr in exec_nr:  # no new executable memory: a shared object the program wrote never runs
        code += [(0x15, 0, len(block), nr)] + block
    block = [ld(16), (0x15, 0, "deny", pid), (0x06, 0, 0, ALLOW)]  # kill(2): this process only
    code += [(0x15, 0, len(block), kill_nr)] + block + [(0x06, 0, 0, ALLOW), (0x06, 0, 0, DENY)]
    deny_at = len(code) - 1
    out = b""
    for i, (c, jt, jf, k) in enumerate(code):
        jt, jf = (deny_at - i - 1 if j == "deny" else j for j in (jt, jf))
        assert 0 <= jt < 256 and 0 <= jf < 256
        out += struct.pack("=HBBI", c, jt, jf, k)
    return out


def preload_extensions(ctypes) -> None:
    """Map the standard library's extension modules now: once seccomp refuses executable mappings, an
    import finds its shared object already loaded (dlopen of a loaded file maps nothing new). The refused
    ones are left out: they stay unloadable."""
    import glob

    skip = DENY_MODULES | {"_tkinter", "audioop", "ossaudiodev", "nis", "spwd", "_crypt", "xxlimited",
                           "xxlimited_35", "_lsprof"}
    for p in glob.glob(os.path.join(os.path.dirname(os.__file__), "lib-dynload", "*.so")):
        if os.path.basename(p).split(".")[0] not in skip:
            try:
                ctypes.CDLL(p, mode=os.RTLD_NOW | os.RTLD_LOCAL)
            except OSError:
                pass  # a module whose library is missing here: it would not import anyway


def install_seccomp(libc, ctypes) -> bool:
    """True when the filter is on; False where this kernel or architecture has none."""
    machine = os.uname().machine
    if machine not in SYSCALLS:
        return False
    preload_extensions(ctypes)
    prog = seccomp_program(machine, os.getpid())
    buf = ctypes.create_string_buffer(prog, len(prog))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(prog) // 8, ctypes.cast(buf, ctypes.c_void_p))
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS: required to filter without CAP_SYS_ADMIN
        return False
    return libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) == 0  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER


# --- the process ---------------------------------------------------------------------------------------


def readable_by_others(path: str) -> bool:
    """Every folder from / down to `path` searchable by others, `path` readable too: nobody can import."""
    import stat

    p = os.path.realpath(path)
    try:
        if not os.stat(p).st_mode & stat.S_IROTH:
            return False
        while True:
            if not os.stat(p).st_mode & stat.S_IXOTH:
                return False
            if p == "/":
                return True
            p = os.path.dirname(p)
    except OSError:
        return False


def isolate(mode: str, memory: int, cpu_s: int, root: str) -> dict:
    import ctypes
    import resource

    libc = ctypes.CDLL(None, use_errno=True)
    flags = {"netns": 0x40000000, "userns+netns": 0x10000000 | 0x40000000}.get(mode, 0)  # CLONE_NEWNET, NEWUSER
    if flags and libc.unshare(flags) != 0:
        raise OSError(f"unshare failed: {os.strerror(ctypes.get_errno())}")
    for lim, val in ((resource.RLIMIT_AS, memory), (resource.RLIMIT_CPU, cpu_s), (resource.RLIMIT_FSIZE, 16 * 2**20),
                     (resource.RLIMIT_NOFILE, 64), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(lim, (val, val))
    stdlib = [os.path.dirname(os.__file__)] + [p for p in sys.path if p.endswith("lib-dynload")]
    if os.geteuid() == 0 and all(readable_by_others(p) for p in stdlib):
        os.chown(root, NOBODY, NOBODY)
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    if os.geteuid() != 0:
        resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))  # no process, no thread (root would ignore it)
    seccomp = install_seccomp(libc, ctypes)
    if not seccomp and os.geteuid() == 0:
        raise OSError("no seccomp filter here, and the program would run as root: refused")
    # signal.raise_signal(SIGSTOP) would fake the proof (no audit event): seccomp refuses tgkill; without
    # seccomp the signal module goes (unittest, which imports it, then fails to import: the safe side)
    gone = ("ctypes", "_ctypes") if seccomp else ("ctypes", "_ctypes", "_signal", "signal")
    for name in [m for m in sys.modules if m.split(".")[0] in gone]:
        del sys.modules[name]  # imported again, they meet the hook's import check (refused)
    user = "nobody" if os.geteuid() == NOBODY else "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
    return {"network": mode, "user": user, "seccomp": seccomp, "guard": "audit-hook"}, gone


def make_hook(root: str, read_roots: tuple, finish_code, done_code, check_code, ns: dict, gone: tuple):
    """The audit hook. Everything it calls is bound here, before the program runs: a name looked up at
    call time (a global, a builtin, a module attribute) could be the program's by then."""
    import stat
    import types

    _type, _str, _bytes, _int, _len, _none = type, str, bytes, int, len, None
    _PermissionError, _OSError, _FunctionType = PermissionError, OSError, types.FunctionType
    _getframe, _lstat, _stat, _readlink, _getcwd = sys._getframe, os.lstat, os.stat, os.readlink, os.getcwd
    _pid, _S_IFMT, _S_IFLNK, _S_IFDIR = os.getpid(), 0o170000, stat.S_IFLNK, stat.S_IFDIR
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    deny_events, deny_modules, path_events = DENY_EVENTS, DENY_MODULES | frozenset(gone), PATH_EVENTS
    net_dev = f"/proc/{_pid}/net/dev"  # interface names: how a test sees the network namespace from inside
    armed = None  # the frame of `finish` that announced the genuine check

    def real(p):
        """os.path.realpath from captured C functions only (posixpath's is patchable Python)."""
        if _type(p) is _bytes:
            p = p.decode("utf-8", "surrogateescape")
        if _type(p) is not _str:
            return None  # a str subclass, a PathLike: its own methods would run here
        if not p.startswith("/"):
            p = _getcwd() + "/" + p
        todo, out, links = p.split("/")[::-1], [], 0
        while todo:
            c = todo.pop()
            if c == "" or c == ".":
                continue
            if c == "..":
                if out:
                    out.pop()
                continue
            here = "/" + "/".join(out + [c])
            try:
                st = _lstat(here)
            except _OSError:
                out.append(c)  # not there (yet): what the kernel would create
                continue
            if st.st_mode & _S_IFMT == _S_IFLNK:
                links += 1
                if links > 40:
                    return None
                target = _readlink(here)
                if target.startswith("/"):
                    out = []
                todo.extend(target.split("/")[::-1])
            else:
                out.append(c)
        return "/" + "/".join(out)

    def inside(p, roots):
        for r in roots:
            if p == r or p.startswith(r + "/"):
                return True
        return False

    def hook(event, args):
        nonlocal armed
        if _type(event) is not _str:
            raise _PermissionError("sandbox: an audit event that is not a str")
        if event == "amigo.check":  # raised by `finish` just before it calls check
            f = _getframe(1)
            chk = args[0] if _len(args) == 1 else _none
            if (f.f_code is finish_code and _type(chk) is _FunctionType and chk.__code__ is check_code
                    and chk.__globals__ is ns):
                armed = f
            return
        if event == "os.kill":  # the proof: SIGSTOP to this process from the armed `finish`, or from `done`
            f = _getframe(1)
            if (_type(args[0]) is _int and _type(args[1]) is _int and args[0] == _pid and args[1] == SIGSTOP
                    and ((f is armed and f.f_code is finish_code) or (done_code is not _none and f.f_code is done_code))):
                return
            raise _PermissionError("sandbox: os.kill is not allowed")
        if event == "import":
            name = args[0]
            if _type(name) is not _str or name in deny_modules or name.split(".")[0] in deny_modules:
                raise _PermissionError(f"sandbox: import of {name if _type(name) is _str else '?'} is not allowed")
            return
        if event.startswith(deny_events):
            raise _PermissionError(f"sandbox: {event} is not allowed")
        if event in path_events:
            paths, dirfds = path_events[event]
            for i in dirfds:  # -1 (CPython's "none given") or None; anything else is a directory fd
                if i < _len(args) and args[i] is not _none and not (_type(args[i]) is _int and args[i] == -1):
                    raise _PermissionError(f"sandbox: {event} relative to a directory fd")
            for i in paths:
                p = real(args[i]) if i < _len(args) else _none
                if p is _none or not inside(p, (root,)):
                    raise _PermissionError(f"sandbox: {event} outside the sandbox directory")
            return
        if event == "open":
            if _type(args[0]) is _int:
                return  # an fd: opened under these rules already
            p = real(args[0])
            mode, flags = args[1], args[2]
            write = ((_type(mode) is _str and ("w" in mode or "a" in mode or "x" in mode or "+" in mode))
                     or (_type(flags) is _int and flags & writes) or (mode is not _none and _type(mode) is not _str)
                     or (flags is not _none and _type(flags) is not _int))
            if p is not _none and (inside(p, (root,)) or p == "/dev/null" or p == net_dev):
                return
            if p is not _none and not write and inside(p, read_roots):
                try:
                    is_dir = _stat(p).st_mode & _S_IFMT == _S_IFDIR
                except _OSError:
                    is_dir = False  # not there: the open fails by itself
                if is_dir:  # a directory fd: *at calls relative to it would escape the path checks
                    raise _PermissionError("sandbox: opening a directory outside the sandbox directory")
                return
            raise _PermissionError("sandbox: " + ("writing" if write else "reading")
                                   + " outside the sandbox directory")

    return hook


def make_finish():
    """`finish(check, candidate)`: announce the genuine check, run it, and - only once it returned - stop."""
    def finish(check, candidate, _audit=sys.audit, _kill=os.kill, _pid=os.getpid(), _stop=SIGSTOP):
        _audit("amigo.check", check)
        check(candidate)
        _kill(_pid, _stop)

    def done(_kill=os.kill, _pid=os.getpid(), _stop=SIGSTOP):
        _kill(_pid, _stop)

    return finish, done


def load(name: str):
    """(code, None) or (None, the SyntaxError's text): a program that does not compile fails, it is not a
    setup failure."""
    with open(name, encoding="utf-8") as f:
        src = f.read()
    try:
        return compile(src, name, "exec"), None
    except (SyntaxError, ValueError) as e:
        return None, f"{type(e).__name__}: {e}"


def check_code_of(test_code) -> object:
    """test.py's own `def check` (the code object its module body turns into the function)."""
    for c in test_code.co_consts:
        if getattr(c, "co_name", None) == "check":
            return c
    raise ValueError("test.py defines no check()")


def main() -> None:
    mode, memory_mb, cpu_s, setup_fd, entry = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), \
        sys.argv[5]
    root = os.getcwd()
    try:
        import json
        import traceback
        import typing  # noqa: F401 - nearly every prompt imports it; from its .pyc now, while that is allowed

        program, error = load("program.py")
        test, terr = load("test.py") if entry else (None, None)
        if terr:
            raise ValueError(f"test.py: {terr}")
        check_code = check_code_of(test) if test else None
        read_roots = tuple(os.path.realpath(p) for p in sys.path if p)
        info, gone = isolate(mode, memory_mb * 2**20, cpu_s, root)
        sys.pycache_prefix = root + "/.no-pycache"  # imports compile from source: unmarshalling is refused
        sys.dont_write_bytecode = True
        ns: dict = {}  # not __main__: `if __name__ == "__main__":` blocks do not run, as in the reference harness
        finish, done = make_finish()
        hook = make_hook(root, read_roots, finish.__code__, None if entry else done.__code__, check_code, ns,
                         gone)
        os.write(setup_fd, json.dumps(info).encode())
        os.close(setup_fd)
    except Exception as e:  # never run the program half-isolated
        os.write(setup_fd, f"sandbox: setup failed: {e!r}".encode())
        os._exit(125)
    sys.argv = ["program.py"]
    sys.addaudithook(hook)
    del hook
    try:
        if error:
            raise SyntaxError(error)
        exec(program, ns)
        if test is None:
            done()
        else:
            exec(test, ns)
            finish(ns["check"], ns[entry])
        os.write(2, b"sandbox: the program ended without the proof (check did not return)\n")
    except BaseException as e:  # noqa: BLE001 - SystemExit and KeyboardInterrupt are failures too
        try:
            text = "".join(traceback.format_exception(e))
        except BaseException:  # noqa: BLE001 - a program can break the traceback module too
            text = f"{type(e).__name__}\n"
        os.write(2, text.encode("utf-8", "replace")[-4000:])
    os._exit(1)  # never exit hooks, never the program's threads: the verdict is already given


if __name__ == "__main__":
    main()
