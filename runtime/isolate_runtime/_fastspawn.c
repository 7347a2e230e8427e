/*
 * One copy of the caller's address space per sandbox instead of three.
 *
 * sandbox() forks A, which runs the compiled setup calls (below) and so ends
 * up in the sandbox's new user, mount, net, ... namespaces with
 * pid_for_children pointing at a new PID namespace; then (spawn_pair()):
 *
 *   1. init = clone(CLONE_VM) running init_main() on a static stack: PID 1 of
 *      the new namespace.  It shares A's memory but only ever touches its own
 *      stack and makes raw system calls (no errno: the TLS is shared), so it
 *      costs no page-table copy.  It reaps every orphan until it is killed.
 *   2. P = clone(CLONE_VM | CLONE_VFORK): PID 2.  P continues *A's* Python
 *      program on A's original stack (it returns from sandbox() into Python and
 *      runs the payload); A is suspended by the kernel until P exits or execs,
 *      so nobody else uses that memory meanwhile.  A itself resumes on a
 *      private stack (the clone is issued with A's stack pointer switched) and
 *      runs a_after(): wait for P, write P's wait status to the result channel
 *      as a frame, kill init (which takes the namespace with it), exit.
 *
 * glibc caches the thread id in its thread descriptor (raise() and
 * pthread_kill use it): P sets it to its own tid.  The kernel drops the rseq
 * registration of a CLONE_VM child; P registers glibc's area again.
 *
 * x86-64 only; elsewhere the module is not built and the runtime forks twice.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#if !defined(__x86_64__)
#error "_fastspawn supports x86-64 only"
#endif

#define STACK_SIZE (256 * 1024)
static char init_stack[STACK_SIZE] __attribute__((aligned(64)));
static char resume_stack[STACK_SIZE] __attribute__((aligned(64)));

static volatile int chan_fd = -1;
static volatile pid_t init_pid = 0;
static volatile pid_t payload_pid = 0;  /* written by the kernel (CLONE_PARENT_SETTID) */
static unsigned long saved_mask[2];
static long tid_offset = -1;

static inline long raw6(long n, long a, long b, long c, long d, long e, long f)
{
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}
#define raw(n, a, b, c, d) raw6((n), (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)

/* long isolate_vfork_continue(unsigned long flags, void *resume_sp,
 *                             void (*after)(long), int *ptid)
 * Returns 0 in the child (on the caller's stack), a negative errno on failure
 * (on the caller's stack); in the parent it never returns: it calls after(pid)
 * on resume_sp. */
__asm__(
    ".text\n"
    ".globl isolate_vfork_continue\n"
    ".type isolate_vfork_continue,@function\n"
    "isolate_vfork_continue:\n"
    "    mov %rdx, %r9\n"        /* after */
    "    mov %rcx, %rdx\n"       /* parent_tid */
    "    mov %rsi, %r8\n"
    "    mov %rsp, %rsi\n"       /* the child keeps the caller's stack */
    "    mov %r8, %rsp\n"        /* the parent moves to the resume stack */
    "    xor %r10, %r10\n"       /* child_tid */
    "    xor %r8, %r8\n"         /* tls */
    "    mov $56, %eax\n"        /* SYS_clone */
    "    syscall\n"
    "    test %rax, %rax\n"
    "    jz 1f\n"
    "    js 2f\n"
    "    mov %rax, %rdi\n"
    "    and $-16, %rsp\n"
    "    call *%r9\n"
    "    ud2\n"
    "1:  ret\n"
    "2:  mov %rsi, %rsp\n"
    "    ret\n"
    ".size isolate_vfork_continue, .-isolate_vfork_continue\n");
long isolate_vfork_continue(unsigned long flags, void *resume_sp, void (*after)(long), volatile pid_t *ptid);

/* A pidfd of A, inherited by init: PDEATHSIG armed after A is already gone
 * would never fire, so init checks once, after arming, that A still lives. */
static volatile int a_pidfd = -1;

static int init_main(void *arg)
{
    unsigned long chld = 1UL << (SIGCHLD - 1);
    struct pollfd a = {a_pidfd, POLLIN, 0};
    (void)arg;
    raw(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0);
    if (a.fd >= 0) {
        if (raw(SYS_poll, &a, 1, 0, 0) > 0) /* A has exited: so does the namespace */
            raw(SYS_exit_group, 0, 0, 0, 0);
        raw(SYS_close, a.fd, 0, 0, 0);
    }
    for (;;) {
        while (raw6(SYS_wait4, -1, 0, WNOHANG | __WALL, 0, 0, 0) > 0) {
        }
        raw(SYS_rt_sigtimedwait, &chld, 0, 0, 8);
    }
    return 0;
}

static void a_after(long pid)
{
    int status = 0;
    unsigned char frame[9];
    long code;
    while (raw6(SYS_wait4, pid, (long)&status, __WALL, 0, 0, 0) == -EINTR) {
    }
    frame[0] = 0; frame[1] = 0; frame[2] = 0; frame[3] = 5; frame[4] = 'W';
    frame[5] = (unsigned char)((unsigned)status >> 24);
    frame[6] = (unsigned char)((unsigned)status >> 16);
    frame[7] = (unsigned char)((unsigned)status >> 8);
    frame[8] = (unsigned char)status;
    if (chan_fd >= 0)
        raw(SYS_write, chan_fd, frame, sizeof frame, 0);
    raw(SYS_kill, init_pid, SIGKILL, 0, 0);
    raw6(SYS_wait4, init_pid, 0, __WALL, 0, 0, 0);
    if (WIFSIGNALED(status))
        code = 128 + WTERMSIG(status);
    else
        code = WEXITSTATUS(status);
    raw(SYS_exit_group, code, 0, 0, 0);
    for (;;) {
    }
}

/* glibc >= 2.35 exports where its per-thread rseq area lives. */
extern const ptrdiff_t __rseq_offset __attribute__((weak));
extern const unsigned int __rseq_size __attribute__((weak));

static void fix_thread_state(void)
{
    pid_t tid = (pid_t)raw(SYS_gettid, 0, 0, 0, 0);
    if (tid_offset >= 0)
        *(pid_t *)((char *)pthread_self() + tid_offset) = tid;
    if (&__rseq_size != NULL && &__rseq_offset != NULL && __rseq_size >= 32) {
        char *area = (char *)__builtin_thread_pointer() + __rseq_offset;
        raw(SYS_rseq, area, __rseq_size < 32 ? 32 : __rseq_size, 0, 0x53053053);
    }
}

/* Where glibc keeps the thread id in its thread descriptor.  A scan for the
 * value alone is not enough: the high half of a pointer in the descriptor
 * (0x00007fxx) equals a thread id below pid_max = 32768 now and then, and
 * writing P's tid there corrupts the pointer (a rare SIGSEGV).  So the
 * candidates are collected in the caller at import, and A keeps the one that
 * also holds *its* tid: pointers are the same in both, the ids differ. */
#define MAX_CANDIDATES 8
static long tid_candidates[MAX_CANDIDATES];
static int n_candidates = 0;

static void collect_tid_candidates(void)
{
    pid_t tid = (pid_t)raw(SYS_gettid, 0, 0, 0, 0);
    char *self = (char *)pthread_self();
    long off;
    n_candidates = 0;
    for (off = 0; off < 4096 && n_candidates < MAX_CANDIDATES; off += 4) {
        if (*(pid_t *)(self + off) == tid)
            tid_candidates[n_candidates++] = off;
    }
}

static void find_tid_offset(void)
{
    pid_t tid = (pid_t)raw(SYS_gettid, 0, 0, 0, 0);
    char *self = (char *)pthread_self();
    int i;
    tid_offset = -1;
    for (i = 0; i < n_candidates; i++) {
        if (*(pid_t *)(self + tid_candidates[i]) != tid)
            continue;
        if (tid_offset >= 0) { /* ambiguous: leave glibc's cache alone */
            tid_offset = -1;
            return;
        }
        tid_offset = tid_candidates[i];
    }
}

/* Start init (PID 1) and continue as P (PID 2).  Returns 0 in P, a negative
 * errno on failure (in A); A itself never returns on success. */
static long spawn_pair(int fd)
{
    unsigned long all[2] = {~0UL, ~0UL};
    long r;
    chan_fd = fd;
    find_tid_offset();
    raw(SYS_rt_sigprocmask, SIG_SETMASK, all, saved_mask, 8);
    r = raw(434 /* pidfd_open */, raw(SYS_getpid, 0, 0, 0, 0), 0, 0, 0);
    a_pidfd = r < 0 ? -1 : (int)r;
    r = clone(init_main, init_stack + STACK_SIZE, CLONE_VM | SIGCHLD, NULL);
    if (a_pidfd >= 0)
        raw(SYS_close, a_pidfd, 0, 0, 0); /* init has its own copy; PID 2 must not inherit it */
    if (r < 0) {
        long err = -errno;
        raw(SYS_rt_sigprocmask, SIG_SETMASK, saved_mask, 0, 8);
        return err;
    }
    init_pid = (pid_t)r;
    r = isolate_vfork_continue(CLONE_VM | CLONE_VFORK | CLONE_PARENT_SETTID | SIGCHLD,
                               resume_stack + STACK_SIZE, a_after, &payload_pid);
    if (r < 0) {
        raw(SYS_kill, init_pid, SIGKILL, 0, 0);
        raw6(SYS_wait4, init_pid, 0, __WALL, 0, 0, 0);
        raw(SYS_rt_sigprocmask, SIG_SETMASK, saved_mask, 0, 8);
        return r;
    }
    /* P from here on. */
    fix_thread_state();
    raw(SYS_rt_sigprocmask, SIG_SETMASK, saved_mask, 0, 8);
    return 0;
}

/* ------------------------------------------------------------------------
 * The whole sandbox setup without the interpreter.
 *
 * sandbox(program, channel_fd) forks A and runs in A a list of kernel calls
 * compiled by mounts.py / launcher.py (the opcodes are defined there; keep
 * both in step), up to SPAWN; then init and P as above; P runs the rest of
 * the list and returns into Python.  The Python executor (mounts.execute)
 * runs the same lists when this module is missing.
 *
 * A failed call is reported as a frame 'X' = (call index, errno), big-endian,
 * and the process exits with SETUP_EXIT.  Nothing here touches a Python
 * object between the fork and P's return: no copy-on-write faults on the
 * interpreter's memory, no bytecode on the critical path.
 */
enum {
    OP_PDEATHSIG = 1, OP_CHECK_PPID, OP_SETSID, OP_WRITE, OP_UNSHARE, OP_MOUNT, OP_MKDIR, OP_MKDIRS,
    OP_SYMLINK, OP_TOUCH, OP_COPY, OP_PIVOT, OP_CHDIR, OP_UMOUNT, OP_RMDIR, OP_OVERLAY, OP_BIND,
    OP_REMOUNT_RO, OP_SETATTR_RO, OP_IF_EXISTS, OP_LO_UP, OP_SETHOSTNAME, OP_OPEN_UPPER, OP_SPAWN
};
#define SETUP_EXIT 125

struct call {
    int code;
    int nargs;
    long num;
    const char *a[4];
};

/* Decodes the call at *pp: <BBBxq> code, step, nargs, num; then nargs times
 * <I> length (with the NUL) and the bytes.  Returns 0, or -1 at the end. */
static int next_call(const unsigned char **pp, const unsigned char *end, struct call *c)
{
    const unsigned char *p = *pp;
    int i;
    int64_t num;
    if (p + 12 > end)
        return -1;
    c->code = p[0];
    c->nargs = p[2] > 4 ? 4 : p[2];
    memcpy(&num, p + 4, 8);
    c->num = (long)num;
    p += 12;
    for (i = 0; i < 4; i++)
        c->a[i] = "";
    for (i = 0; i < c->nargs; i++) {
        uint32_t len;
        if (p + 4 > end)
            return -1;
        memcpy(&len, p, 4);
        p += 4;
        if (len == 0 || p + len > end || p[len - 1] != 0)
            return -1;
        c->a[i] = (const char *)p;
        p += len;
    }
    *pp = p;
    return 0;
}

static const char *nz(const char *s) { return s[0] ? s : NULL; }

static int mkdirs(const char *path)
{
    char buf[PATH_MAX];
    size_t n = strlen(path), i;
    struct stat st;
    if (n == 0 || n >= sizeof buf)
        return -ENAMETOOLONG;
    memcpy(buf, path, n + 1);
    for (i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == 0) {
            char saved = buf[i];
            buf[i] = 0;
            if (mkdir(buf, 0777) < 0 && errno != EEXIST)
                return -errno;
            buf[i] = saved;
        }
    }
    if (stat(path, &st) < 0)
        return -errno;
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

static int touch(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    close(fd);
    return 0;
}

static int remount_ro(const char *path)
{
    struct statvfs sv;
    unsigned long flags = MS_BIND | MS_REMOUNT | MS_RDONLY;
    if (statvfs(path, &sv) < 0)
        return -errno;
    if (sv.f_flag & ST_RDONLY)
        return 0;
    if (sv.f_flag & ST_NOSUID) flags |= MS_NOSUID;
    if (sv.f_flag & ST_NODEV) flags |= MS_NODEV;
    if (sv.f_flag & ST_NOEXEC) flags |= MS_NOEXEC;
    if (sv.f_flag & ST_NOATIME) flags |= MS_NOATIME;
    if (sv.f_flag & ST_NODIRATIME) flags |= MS_NODIRATIME;
    if (sv.f_flag & ST_RELATIME) flags |= MS_RELATIME;
    return mount(NULL, path, NULL, flags, NULL) < 0 ? -errno : 0;
}

static int copy_file(const char *src, const char *dst)
{
    char buf[65536];
    struct stat st;
    int in, out, err = 0;
    ssize_t n;
    if ((in = open(src, O_RDONLY | O_CLOEXEC)) < 0)
        return -errno;
    if (fstat(in, &st) < 0 || (out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666)) < 0) {
        err = -errno;
        close(in);
        return err;
    }
    while ((n = read(in, buf, sizeof buf)) != 0) {
        char *p = buf;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            err = -errno;
            break;
        }
        while (n > 0) {
            ssize_t w = write(out, p, (size_t)n);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                err = -errno;
                break;
            }
            p += w;
            n -= w;
        }
        if (err)
            break;
    }
    if (!err && fchmod(out, st.st_mode & 07777) < 0)
        err = -errno;
    close(in);
    close(out);
    return err;
}

static int bind_auto(const char *src, const char *dst)
{
    struct stat st;
    int r;
    if (stat(src, &st) < 0)
        return -errno;
    if (S_ISDIR(st.st_mode)) {
        if ((r = mkdirs(dst)) < 0)
            return r;
    } else {
        char dir[PATH_MAX];
        char *slash;
        size_t n = strlen(dst);
        if (n >= sizeof dir)
            return -ENAMETOOLONG;
        memcpy(dir, dst, n + 1);
        slash = strrchr(dir, '/');
        if (slash != NULL && slash != dir) {
            *slash = 0;
            if ((r = mkdirs(dir)) < 0)
                return r;
        }
        if (stat(dst, &st) < 0 && (r = touch(dst)) < 0)
            return r;
    }
    return mount(src, dst, NULL, MS_BIND | MS_REC, NULL) < 0 ? -errno : 0;
}

struct mount_attr_ro {
    uint64_t attr_set, attr_clr, propagation, userns_fd;
};

static int lo_up(void)
{
    struct ifreq ifr;
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), err = 0;
    if (s < 0)
        return -errno;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        err = -errno;
    else {
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
            err = -errno;
    }
    close(s);
    return err;
}

/* One call; returns 0, a negative errno, or 1 for "skip c->num calls". */
static int do_call(const struct call *c, int *upper_fd)
{
    const char *const *a = c->a;
    int r;
    switch (c->code) {
    case OP_PDEATHSIG:
        return prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 ? -errno : 0;
    case OP_CHECK_PPID:
        if (getppid() != (pid_t)c->num)
            _exit(SETUP_EXIT); /* the caller died before PDEATHSIG was armed */
        return 0;
    case OP_SETSID:
        return setsid() < 0 ? -errno : 0;
    case OP_WRITE: {
        int fd = open(a[0], O_WRONLY | O_CLOEXEC);
        size_t n = strlen(a[1]);
        if (fd < 0)
            return (errno == ENOENT && (c->num & 1)) ? 0 : -errno;
        r = write(fd, a[1], n) == (ssize_t)n ? 0 : -errno;
        close(fd);
        return r;
    }
    case OP_UNSHARE:
        return unshare((int)c->num) < 0 ? -errno : 0;
    case OP_MOUNT:
        return mount(nz(a[0]), a[1], nz(a[2]), (unsigned long)c->num, nz(a[3])) < 0 ? -errno : 0;
    case OP_MKDIR:
        return mkdir(a[0], (mode_t)c->num) < 0 ? -errno : 0;
    case OP_MKDIRS:
        return mkdirs(a[0]);
    case OP_SYMLINK: {
        char target[PATH_MAX];
        const char *to = a[0];
        if (!to[0]) {
            ssize_t n = readlink(a[2], target, sizeof target - 1);
            if (n < 0)
                return -errno;
            target[n] = 0;
            to = target;
        }
        return symlink(to, a[1]) < 0 ? -errno : 0;
    }
    case OP_TOUCH:
        return touch(a[0]);
    case OP_COPY:
        return copy_file(a[0], a[1]);
    case OP_PIVOT:
        return syscall(SYS_pivot_root, a[0], a[1]) < 0 ? -errno : 0;
    case OP_CHDIR:
        return chdir(a[0]) < 0 ? -errno : 0;
    case OP_UMOUNT:
        return umount2(a[0], (int)c->num) < 0 ? -errno : 0;
    case OP_RMDIR:
        return rmdir(a[0]) < 0 ? -errno : 0;
    case OP_OVERLAY:
        if (mount("isolate-overlay", a[0], "overlay", 0, a[1]) == 0)
            return 0;
        /* degraded: the directory is seen read-only instead of copy-on-write */
        if (mount(a[2], a[0], NULL, MS_BIND | MS_REC, NULL) < 0)
            return -errno;
        return remount_ro(a[0]);
    case OP_BIND:
        return bind_auto(a[0], a[1]);
    case OP_REMOUNT_RO:
        return remount_ro(a[0]);
    case OP_SETATTR_RO: {
        struct mount_attr_ro attr = {0x1, 0, 0, 0};
        return syscall(442 /* mount_setattr */, AT_FDCWD, a[0], 0x8000 /* AT_RECURSIVE */, &attr,
                       sizeof attr) < 0 ? -errno : 0;
    }
    case OP_IF_EXISTS: {
        struct stat st;
        return stat(a[0], &st) < 0 ? 1 : 0;
    }
    case OP_LO_UP:
        return lo_up();
    case OP_SETHOSTNAME:
        return sethostname(a[0], strlen(a[0])) < 0 ? -errno : 0;
    case OP_OPEN_UPPER:
        *upper_fd = open(a[0], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        return *upper_fd < 0 ? -errno : 0;
    default:
        return -EINVAL;
    }
}

static void report(int fd, uint32_t index, int err)
{
    unsigned char frame[13];
    frame[0] = 0; frame[1] = 0; frame[2] = 0; frame[3] = 9; frame[4] = 'X';
    frame[5] = (unsigned char)(index >> 24); frame[6] = (unsigned char)(index >> 16);
    frame[7] = (unsigned char)(index >> 8); frame[8] = (unsigned char)index;
    frame[9] = (unsigned char)((unsigned)err >> 24); frame[10] = (unsigned char)((unsigned)err >> 16);
    frame[11] = (unsigned char)((unsigned)err >> 8); frame[12] = (unsigned char)err;
    raw(SYS_write, fd, frame, sizeof frame, 0);
}

/* Runs calls from *pp until SPAWN (returns 1) or the end (0); on failure
 * reports and exits. */
static int run_calls(const unsigned char **pp, const unsigned char *end, uint32_t *index, int fd,
                     int *upper_fd)
{
    struct call c;
    while (next_call(pp, end, &c) == 0) {
        int r;
        uint32_t here = (*index)++;
        if (c.code == OP_SPAWN)
            return 1;
        r = do_call(&c, upper_fd);
        if (r > 0) {
            long skip = c.num;
            while (skip-- > 0 && next_call(pp, end, &c) == 0)
                (*index)++;
        } else if (r < 0) {
            report(fd, here, -r);
            raw(SYS_exit_group, SETUP_EXIT, 0, 0, 0);
        }
    }
    return 0;
}

static PyObject *sandbox(PyObject *self, PyObject *args)
{
    Py_buffer prog;
    int fd;
    pid_t pid;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*i", &prog, &fd))
        return NULL;
    PyOS_BeforeFork();
    pid = fork();
    if (pid == 0) {
        const unsigned char *p = prog.buf, *end = p + prog.len;
        uint32_t index = 0;
        int upper_fd = -1;
        unsigned char frame[13];
        long r;
        if (run_calls(&p, end, &index, fd, &upper_fd) != 1) {
            report(fd, index, EINVAL);
            _exit(SETUP_EXIT);
        }
        r = spawn_pair(fd);
        if (r < 0) {
            report(fd, index - 1, (int)-r);
            _exit(SETUP_EXIT);
        }
        /* P: tell the parent both pids first (it kills through them) */
        frame[0] = 0; frame[1] = 0; frame[2] = 0; frame[3] = 9; frame[4] = 'p';
        frame[5] = (unsigned char)((unsigned)init_pid >> 24); frame[6] = (unsigned char)((unsigned)init_pid >> 16);
        frame[7] = (unsigned char)((unsigned)init_pid >> 8); frame[8] = (unsigned char)init_pid;
        frame[9] = (unsigned char)((unsigned)payload_pid >> 24);
        frame[10] = (unsigned char)((unsigned)payload_pid >> 16);
        frame[11] = (unsigned char)((unsigned)payload_pid >> 8); frame[12] = (unsigned char)payload_pid;
        raw(SYS_write, fd, frame, sizeof frame, 0);
        run_calls(&p, end, &index, fd, &upper_fd);
        PyOS_AfterFork_Child();
        PyBuffer_Release(&prog);
        return Py_BuildValue("(iiii)", 0, (int)init_pid, (int)payload_pid, upper_fd);
    }
    {
        int err = errno;
        PyOS_AfterFork_Parent();
        PyBuffer_Release(&prog);
        if (pid < 0) {
            errno = err;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
    }
    return Py_BuildValue("(iiii)", (int)pid, 0, 0, -1);
}

static PyMethodDef methods[] = {
    {"sandbox", sandbox, METH_VARARGS,
     "sandbox(program, channel_fd) -> (pid, init_pid, payload_pid, upper_fd)\n\n"
     "Fork; the child runs the compiled kernel calls up to SPAWN, starts PID 1\n"
     "and continues as PID 2, which runs the rest and returns (0, init, payload,\n"
     "upper_fd).  The caller gets (pid, 0, 0, -1)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastspawn", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fastspawn(void)
{
    collect_tid_candidates();
    return PyModule_Create(&module);
}
