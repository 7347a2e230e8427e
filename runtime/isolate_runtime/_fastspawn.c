/*
 * The C executor of the sandbox program (see program.py for the program and
 * spawn.py for the same program run by the Python executor).
 *
 * sandbox(program, ctl_fd) forks A (one copy of the caller's address space,
 * the only one per sandbox) and returns A's pid to the caller.  In A:
 *
 *   A  runs the program's first section: dies with the caller, raises its
 *      OOM score (the sandbox's processes are the OOM killer's first
 *      choice), joins the cgroup, unshares the namespaces, writes the id maps, builds the root
 *      filesystem, brings lo up, makes a listener for each forwarded service
 *      and sends them to the network relay (which A then closes: S and P
 *      never hold one).  Then SPAWN_INIT:
 *   S  = clone(CLONE_PARENT | CLONE_VM) on a static stack: the first process
 *      of the new PID namespace (PID 1), a child of the *caller*.  It runs
 *      the program's init section (fresh /proc and its masks, the pivot that
 *      detaches the host tree, its own user namespace and the drop of every
 *      capability), tells A, closes every file descriptor and then only
 *      reaps orphans, with raw system calls, until it is killed.
 *   A  waits for S, runs the next section (for a privileged caller: enter
 *      a nested user namespace and copy the mount namespace into it, which
 *      locks every mount made so far), reports READY with the upper-layer
 *      and root directory fds on the control socket, then SPAWN_PAYLOAD:
 *   P  = clone(CLONE_PARENT | CLONE_VM) that keeps A's stack: PID 2, also a
 *      child of the caller, so the caller waits for the payload's exit
 *      status itself.  A moves to a private stack, reports P's pid, and
 *      exits.  P waits until A is gone (EOF on a pipe only A held), runs the
 *      payload section (drop privileges, ...) and returns into Python.
 *
 * Why this shape (the payload is hostile code): the payload shares its
 * address space only with S, which lives inside every namespace of the
 * sandbox and has no capabilities left; A, the one process outside the PID
 * namespace, is dead before the payload runs a single instruction of its
 * own.  Nothing the payload does can reach a process outside the sandbox.
 *
 * glibc caches the thread id in its thread descriptor (raise() and
 * pthread_kill use it): P sets it to its own tid.  The kernel drops the rseq
 * registration of a CLONE_VM child; P registers glibc's area again.  A clears
 * its clear_child_tid address before it exits, so its exit does not write
 * into the memory P uses.
 *
 * x86-64 only; elsewhere the module is not built and spawn.py runs the same
 * program with os.fork().
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
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
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#if !defined(__x86_64__)
#error "_fastspawn supports x86-64 only"
#endif

#define STACK_SIZE (256 * 1024)
static char init_stack[STACK_SIZE] __attribute__((aligned(64)));
static char resume_stack[4096 * 4] __attribute__((aligned(64)));

/* Values shared with the Python side: constants() hands them to the test
 * that checks they agree with calls.py and spawn.py. */
#define SETUP_EXIT 125 /* exit status of a sandbox process whose setup failed */
#define MAX_ARGS 4     /* string arguments of one call */
#define MISSING_OK 1   /* WRITE: a path that does not exist is not an error */
#define NOT_DUMPABLE 2 /* DROP_CAPS: also make the process not dumpable */
#define ONE_CAP 4      /* DROP_CAPS: drop only the capability num >> 8 */
#define BEST_EFFORT 4  /* WRITE: a write that fails is not an error */
#define SYS_PIDFD_OPEN 434
#define SYS_CLOSE_RANGE 436

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

/* long isolate_vm_continue(unsigned long flags, void *resume_sp,
 *                          void (*after)(long), int *ptid)
 * clone(flags) where the child keeps the caller's stack and returns 0; the
 * parent moves to resume_sp and calls after(pid), which never returns.  A
 * negative errno is returned (on the caller's stack) on failure. */
__asm__(
    ".text\n"
    ".globl isolate_vm_continue\n"
    ".type isolate_vm_continue,@function\n"
    "isolate_vm_continue:\n"
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
    ".size isolate_vm_continue, .-isolate_vm_continue\n");
long isolate_vm_continue(unsigned long flags, void *resume_sp, void (*after)(long), volatile pid_t *ptid);

/* ------------------------------------------------------------------------
 * glibc's per-thread state in P (see the top comment).
 */

/* glibc >= 2.35 exports where its per-thread rseq area lives. */
extern const ptrdiff_t __rseq_offset __attribute__((weak));
extern const unsigned int __rseq_size __attribute__((weak));
static long tid_offset = -1;

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

/* ------------------------------------------------------------------------
 * The program: a list of kernel calls compiled by program.py / calls.py (the
 * opcodes are defined there; keep both in step), in four sections:
 *
 *   A's calls, SPAWN_INIT, S's calls, INIT_END, A's calls, SPAWN_PAYLOAD, P's calls
 *
 * A failed call is reported on the control socket as 'X' + (index, errno),
 * big-endian, and the process exits with SETUP_EXIT.  Nothing here touches
 * a Python object between the fork and P's return: no copy-on-write faults
 * on the interpreter's memory, no bytecode on the critical path.
 */
enum {
    OP_PDEATHSIG = 1, OP_CHECK_PPID, OP_SETSID, OP_WRITE, OP_UNSHARE, OP_MOUNT, OP_MKDIR, OP_MKDIRS,
    OP_SYMLINK, OP_TOUCH, OP_COPY, OP_PIVOT, OP_CHDIR, OP_UMOUNT, OP_RMDIR, OP_OVERLAY, OP_BIND,
    OP_REMOUNT_RO, OP_SETATTR_RO, OP_IF_EXISTS, OP_LO_UP, OP_SETHOSTNAME, OP_OPEN_UPPER, OP_OPEN_ROOT,
    OP_OPEN_SELF, OP_CALLER_PIDFD, OP_CHECK_CALLER, OP_DROP_CAPS, OP_SECCOMP, OP_SPAWN_INIT, OP_INIT_END,
    OP_SPAWN_PAYLOAD, OP_LISTEN, OP_RELAY
};
#define OP_LAST OP_RELAY /* the highest opcode: check_program() refuses any above it */

struct call {
    int code;
    int nargs;
    long num;
    const char *a[MAX_ARGS];
};

/* Decodes the call at *pp: <BBBxq> code, step, nargs, num; then nargs times
 * <I> length (with the NUL) and the bytes.  Returns 0, or -1 at the end of
 * the program or at anything check_program() would have refused (it runs
 * in the caller before the fork, so that cannot happen here). */
static int next_call(const unsigned char **pp, const unsigned char *end, struct call *c)
{
    const unsigned char *p = *pp;
    int i;
    int64_t num;
    if (p + 12 > end)
        return -1;
    c->code = p[0];
    c->nargs = p[2];
    if (c->nargs > MAX_ARGS)
        return -1;
    memcpy(&num, p + 4, 8);
    c->num = (long)num;
    p += 12;
    for (i = 0; i < MAX_ARGS; i++)
        c->a[i] = "";
    for (i = 0; i < c->nargs; i++) {
        uint32_t len;
        if (p + 4 > end)
            return -1;
        memcpy(&len, p, 4);
        p += 4;
        if (len == 0 || len > (size_t)(end - p) || p[len - 1] != 0)
            return -1;
        c->a[i] = (const char *)p;
        p += len;
    }
    *pp = p;
    return 0;
}

/* The whole program decodes, call by call, to its last byte, with known
 * opcodes and at most MAX_ARGS arguments each.  Returns -1, or the index of
 * the first call that does not. */
static long check_program(const unsigned char *p, const unsigned char *end)
{
    struct call c;
    long index = 0;
    while (p < end) {
        if (p + 12 <= end && (p[0] < OP_PDEATHSIG || p[0] > OP_LAST || p[2] > MAX_ARGS))
            return index;
        if (next_call(&p, end, &c) != 0)
            return index;
        index++;
    }
    return -1;
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

/* No capability in any set, bounding set emptied, ambient cleared,
 * no_new_privs; with num & NOT_DUMPABLE also not dumpable (nothing of the same user
 * may ptrace or read the process's memory through /proc).  num >> 8 is the
 * highest capability number of this kernel. */
static int drop_caps(long num)
{
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    long cap, last = num >> 8;
    if (num & ONE_CAP) {
        unsigned int bit = 1u << (last % 32);
        if (last < 0 || last > 63 || raw(SYS_prctl, PR_CAPBSET_DROP, last, 0, 0) < 0)
            return -EPERM;
        raw6(SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_LOWER, last, 0, 0, 0);
        if (raw(SYS_capget, &hdr, data, 0, 0) < 0)
            return -EPERM;
        data[last / 32].effective &= ~bit;
        data[last / 32].permitted &= ~bit;
        data[last / 32].inheritable &= ~bit;
        return raw(SYS_capset, &hdr, data, 0, 0) < 0 ? -EPERM : 0;
    }
    for (cap = 0; cap <= last; cap++) {
        if (raw(SYS_prctl, PR_CAPBSET_DROP, cap, 0, 0) < 0) {
            long still = raw(SYS_prctl, PR_CAPBSET_READ, cap, 0, 0);
            if (still > 0)
                return -EPERM;
        }
    }
    raw6(SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, 0);
    memset(data, 0, sizeof data);
    if (raw(SYS_capset, &hdr, data, 0, 0) < 0)
        return -EPERM;
    if (raw(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0) < 0)
        return -EPERM;
    if ((num & NOT_DUMPABLE) && raw(SYS_prctl, PR_SET_DUMPABLE, 0, 0, 0) < 0)
        return -EPERM;
    return 0;
}

/* A seccomp filter given as hex (seccomp.py builds it): installed on the
 * calling process; no_new_privs (or CAP_SYS_ADMIN in its user namespace)
 * must already hold. */
static int install_seccomp(const char *hex, long count)
{
    static struct sock_filter filt[256];
    struct sock_fprog prog;
    unsigned char *out = (unsigned char *)filt;
    size_t n = strlen(hex), i;
    if (count <= 0 || count > 256 || n != (size_t)count * sizeof(struct sock_filter) * 2)
        return -EINVAL;
    for (i = 0; i < n; i += 2) {
        int hi = hex[i], lo = hex[i + 1];
        hi = hi <= '9' ? hi - '0' : hi - 'a' + 10;
        lo = lo <= '9' ? lo - '0' : lo - 'a' + 10;
        out[i / 2] = (unsigned char)((hi << 4) | lo);
    }
    prog.len = (unsigned short)count;
    prog.filter = filt;
    return raw(SYS_prctl, PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0) < 0 ? -EPERM : 0;
}

/* State shared by the sandbox's processes while they set up. */
static int upper_fd = -1, root_fd = -1, caller_pidfd = -1;

/* LISTEN's sockets, until RELAY sends them to the relay process (calls.py
 * MAX_LISTEN): an fd, or -1 with the errno of the step that failed. */
#define MAX_LISTEN 64
static int listen_fds[MAX_LISTEN], listen_errs[MAX_LISTEN], n_listen = 0;

/* A listening TCP socket on address:port in this network namespace (a
 * forwarded service's place inside the sandbox).  Never fails the program:
 * one service that cannot be forwarded must not cost the sandbox. */
static int listen_on(const char *address, long port)
{
    union {
        struct sockaddr_in v4;
        struct sockaddr_in6 v6;
    } sa;
    socklen_t len;
    int one = 1, fd, family = strchr(address, ':') ? AF_INET6 : AF_INET, err = 0;
    if (n_listen >= MAX_LISTEN)
        return -E2BIG;
    memset(&sa, 0, sizeof sa);
    if (family == AF_INET6) {
        sa.v6.sin6_family = AF_INET6;
        sa.v6.sin6_port = htons((uint16_t)port);
        len = sizeof sa.v6;
        if (inet_pton(AF_INET6, address, &sa.v6.sin6_addr) != 1)
            err = EINVAL;
    } else {
        sa.v4.sin_family = AF_INET;
        sa.v4.sin_port = htons((uint16_t)port);
        len = sizeof sa.v4;
        if (inet_pton(AF_INET, address, &sa.v4.sin_addr) != 1)
            err = EINVAL;
    }
    fd = err ? -1 : socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (!err && fd < 0)
        err = errno;
    if (!err && family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0)
        err = errno;
    if (!err && (bind(fd, (struct sockaddr *)&sa, len) < 0 || listen(fd, 4096) < 0))
        err = errno;
    if (err && fd >= 0) {
        close(fd);
        fd = -1;
    }
    listen_fds[n_listen] = fd;
    listen_errs[n_listen] = err;
    n_listen++;
    return 0;
}

/* Send the listeners to the relay process on relay_fd (the caller's end of
 * its control socket, inherited by the fork): the caller's header, NUL, one
 * int32 errno per listener (0: its fd is attached, in order).  Then close
 * them, and relay_fd: neither A nor S nor P keeps a listener or a way to
 * talk to the relay.  A relay that is gone is not a failure of the
 * sandbox; the caller learns it when it asks the relay. */
static int relay_send(const char *header, long relay_fd)
{
    static unsigned char msg[4096 + 4 * MAX_LISTEN];
    int fds[MAX_LISTEN], n = 0, i;
    size_t hlen = strlen(header);
    union {
        char buf[CMSG_SPACE(sizeof(int) * MAX_LISTEN)];
        struct cmsghdr align;
    } u;
    struct iovec iov;
    struct msghdr mh;
    if (hlen >= 4096)
        hlen = 4095;
    memcpy(msg, header, hlen);
    msg[hlen] = 0;
    for (i = 0; i < n_listen; i++) {
        int32_t e = listen_errs[i];
        memcpy(msg + hlen + 1 + 4 * i, &e, 4);
        if (listen_fds[i] >= 0)
            fds[n++] = listen_fds[i];
    }
    iov.iov_base = msg;
    iov.iov_len = hlen + 1 + 4 * (size_t)n_listen;
    memset(&mh, 0, sizeof mh);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    if (n) {
        struct cmsghdr *cm;
        memset(&u, 0, sizeof u);
        mh.msg_control = u.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * n);
        cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * n);
        memcpy(CMSG_DATA(cm), fds, sizeof(int) * n);
    }
    sendmsg((int)relay_fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
    for (i = 0; i < n; i++)
        close(fds[i]);
    for (i = 0; i < n_listen; i++)
        listen_fds[i] = -1; /* (their errnos stay, for READY) */
    close((int)relay_fd);
    return 0;
}
/* A's own /proc directory, opened while the host's /proc was visible: a
 * WRITE to a relative path (A's id maps after S detached the host tree)
 * goes there. */
static int self_fd = -1;

/* One call; returns 0, a negative errno, or 1 for "skip c->num calls". */
static int do_call(const struct call *c)
{
    const char *const *a = c->a;
    int r;
    switch (c->code) {
    case OP_PDEATHSIG:
        return prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 ? -errno : 0;
    case OP_CHECK_PPID:
        if (getppid() != (pid_t)c->num)
            raw(SYS_exit_group, SETUP_EXIT, 0, 0, 0); /* the caller died before PDEATHSIG was armed */
        return 0;
    case OP_CALLER_PIDFD:
        caller_pidfd = (int)raw(SYS_PIDFD_OPEN, c->num, 0, 0, 0);
        if (caller_pidfd < 0)
            caller_pidfd = -1; /* kernel < 5.3: the window stays open */
        return 0;
    case OP_CHECK_CALLER: {
        /* S and P are children of the caller, outside their PID namespace
         * (getppid() is 0): PDEATHSIG armed after the caller died would
         * never fire, so look at its pidfd once. */
        struct pollfd p = {caller_pidfd, POLLIN, 0};
        if (caller_pidfd >= 0 && raw(SYS_poll, &p, 1, 0, 0) > 0)
            raw(SYS_exit_group, SETUP_EXIT, 0, 0, 0);
        return 0;
    }
    case OP_SETSID:
        return setsid() < 0 ? -errno : 0;
    case OP_WRITE: {
        int fd = a[0][0] == '/' ? open(a[0], O_WRONLY | O_CLOEXEC) : openat(self_fd, a[0], O_WRONLY | O_CLOEXEC);
        size_t n = strlen(a[1]);
        if (fd < 0)
            return ((errno == ENOENT && (c->num & MISSING_OK)) || (c->num & BEST_EFFORT)) ? 0 : -errno;
        r = write(fd, a[1], n) == (ssize_t)n ? 0 : -errno;
        close(fd);
        return (c->num & BEST_EFFORT) ? 0 : r;
    }
    case OP_UNSHARE:
        return unshare((int)c->num) < 0 ? -errno : 0;
    case OP_MOUNT:
        return mount(nz(a[0]), a[1], nz(a[2]), (unsigned long)c->num, nz(a[3])) < 0 ? -errno : 0;
    case OP_MKDIR:
        if (mkdir(a[0], (mode_t)c->num) < 0)
            return -errno;
        /* the exact mode: the umask (pytest's) strips the write bits of a
         * 1777 /tmp or a group-writable directory, mkdir the setgid bit */
        return (c->num & 07022) && chmod(a[0], (mode_t)c->num) < 0 ? -errno : 0;
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
    case OP_LISTEN:
        return listen_on(a[0], c->num);
    case OP_RELAY:
        return relay_send(a[0], c->num);
    case OP_OPEN_UPPER:
        upper_fd = open(a[0], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        return upper_fd < 0 ? -errno : 0;
    case OP_OPEN_SELF:
        self_fd = open("/proc/self", O_PATH | O_DIRECTORY | O_CLOEXEC);
        return self_fd < 0 ? -errno : 0;
    case OP_OPEN_ROOT:
        root_fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        return root_fd < 0 ? -errno : 0;
    case OP_DROP_CAPS:
        return drop_caps(c->num);
    case OP_SECCOMP:
        return install_seccomp(a[0], c->num);
    default:
        return -EINVAL;
    }
}

static int ctl = -1;

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
}

static void put64(unsigned char *p, int64_t v)
{
    put32(p, (uint32_t)((uint64_t)v >> 32));
    put32(p + 4, (uint32_t)v);
}

static void report(uint32_t index, int err)
{
    unsigned char msg[9];
    msg[0] = 'X';
    put32(msg + 1, index);
    put32(msg + 5, (uint32_t)err);
    raw(SYS_write, ctl, msg, sizeof msg, 0);
}

static void report_pid(char kind, long pid)
{
    unsigned char msg[5];
    msg[0] = (unsigned char)kind;
    put32(msg + 1, (uint32_t)pid);
    raw(SYS_write, ctl, msg, sizeof msg, 0);
}

/* READY: how full the upper layer and the root tmpfs are now (inodes and
 * blocks in use; -1 when absent), with both directory fds attached.  The
 * caller lists what the payload wrote from these, after the payload.  Then
 * the errno of each LISTEN (0: made and sent to the relay), big-endian:
 * the caller reports which forwards the sandbox really has. */
static int send_ready(void)
{
    unsigned char msg[1 + 4 * 8 + 4 * MAX_LISTEN];
    int fds[2], n = 0, i;
    int64_t v[4] = {-1, -1, -1, -1};
    struct statvfs sv;
    union {
        char buf[CMSG_SPACE(sizeof fds)];
        struct cmsghdr align;
    } u;
    struct iovec iov = {msg, 1 + 4 * 8 + 4 * (size_t)n_listen};
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    for (i = 0; i < n_listen; i++)
        put32(msg + 1 + 4 * 8 + 4 * i, (uint32_t)listen_errs[i]);
    if (upper_fd >= 0 && fstatvfs(upper_fd, &sv) == 0) {
        v[0] = (int64_t)(sv.f_files - sv.f_ffree);
        v[1] = (int64_t)(sv.f_blocks - sv.f_bfree);
    }
    if (root_fd >= 0 && fstatvfs(root_fd, &sv) == 0) {
        v[2] = (int64_t)(sv.f_files - sv.f_ffree);
        v[3] = (int64_t)(sv.f_blocks - sv.f_bfree);
    }
    msg[0] = 'R';
    for (i = 0; i < 4; i++)
        put64(msg + 1 + 8 * i, v[i]);
    /* the fds in a fixed order; a missing one is sent as a second copy of
     * nothing: the caller reads the flags from the figures (-1 = absent) */
    if (upper_fd >= 0)
        fds[n++] = upper_fd;
    if (root_fd >= 0)
        fds[n++] = root_fd;
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    if (n) {
        struct cmsghdr *cm;
        memset(&u, 0, sizeof u);
        mh.msg_control = u.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * n);
        cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * n);
        memcpy(CMSG_DATA(cm), fds, sizeof(int) * n);
    }
    return sendmsg(ctl, &mh, MSG_NOSIGNAL) < 0 ? -errno : 0;
}

/* Runs calls from *pp until a section ends (returns its opcode) or the end
 * of the program (0).  A failed call is reported; the process then exits. */
static int run_calls(const unsigned char **pp, const unsigned char *end, uint32_t *index)
{
    struct call c;
    while (next_call(pp, end, &c) == 0) {
        int r;
        uint32_t here = (*index)++;
        if (c.code == OP_SPAWN_INIT || c.code == OP_INIT_END || c.code == OP_SPAWN_PAYLOAD)
            return c.code;
        r = do_call(&c);
        if (r > 0) {
            long skip = c.num;
            while (skip-- > 0 && next_call(pp, end, &c) == 0)
                (*index)++;
        } else if (r < 0) {
            report(here, -r);
            raw(SYS_exit_group, SETUP_EXIT, 0, 0, 0);
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------
 * S: PID 1 of the sandbox.
 */
static const unsigned char *s_prog, *s_end;
static uint32_t s_index;
static int sync_w = -1;
static volatile uint32_t s_failed_index;
static volatile int s_failed_errno;

static void s_fail(uint32_t index, int err)
{
    char no = 'F';
    s_failed_index = index;
    s_failed_errno = err;
    raw(SYS_write, sync_w, &no, 1, 0);
    raw(SYS_exit_group, SETUP_EXIT, 0, 0, 0);
}

static int s_main(void *arg)
{
    unsigned long chld = 1UL << (SIGCHLD - 1), all = ~0UL;
    char ok = 'K';
    struct call c;
    (void)arg;
    /* S's own copy of the descriptor table: the control socket is A's to use */
    raw(SYS_close, ctl, 0, 0, 0);
    while (next_call(&s_prog, s_end, &c) == 0) {
        int r;
        uint32_t here = s_index++;
        if (c.code == OP_INIT_END)
            break;
        r = do_call(&c);
        if (r > 0) {
            long skip = c.num;
            while (skip-- > 0 && next_call(&s_prog, s_end, &c) == 0)
                s_index++;
        } else if (r < 0) {
            s_fail(here, -r);
        }
    }
    raw(SYS_write, sync_w, &ok, 1, 0);
    /* From here S holds nothing: no descriptor (not the caller's capture
     * files, not the channel), no capability; it reaps until it is killed. */
    if (raw(SYS_CLOSE_RANGE, 0, ~0U, 0, 0) < 0) {
        int fd;
        for (fd = 0; fd < 1024; fd++)
            raw(SYS_close, fd, 0, 0, 0);
    }
    raw(SYS_rt_sigprocmask, SIG_SETMASK, &all, 0, 8);
    for (;;) {
        while (raw6(SYS_wait4, -1, 0, WNOHANG | __WALL, 0, 0, 0) > 0) {
        }
        raw(SYS_rt_sigtimedwait, &chld, 0, 0, 8);
    }
    return 0;
}

/* ------------------------------------------------------------------------
 * A's last steps, on its private stack after P exists.
 */
static int death_w = -1;

static void a_after(long pid)
{
    report_pid('C', pid);
    raw(SYS_close, ctl, 0, 0, 0);
    /* glibc set clear_child_tid to the tid field of the thread descriptor P
     * now uses: the kernel would zero it when A exits */
    raw(SYS_set_tid_address, 0, 0, 0, 0);
    raw(SYS_set_robust_list, 0, 24, 0, 0);
    raw(SYS_exit_group, 0, 0, 0, 0);
    for (;;) {
    }
}

static PyObject *sandbox(PyObject *self, PyObject *args)
{
    Py_buffer prog;
    pid_t pid;
    int ctl_fd;
    (void)self;
    long bad;
    if (!PyArg_ParseTuple(args, "y*i", &prog, &ctl_fd))
        return NULL;
    bad = check_program(prog.buf, (const unsigned char *)prog.buf + prog.len);
    if (bad >= 0) {
        PyBuffer_Release(&prog);
        return PyErr_Format(PyExc_ValueError,
                            "sandbox program: call %ld does not decode (unknown opcode, more than %d "
                            "arguments, or cut short)", bad, MAX_ARGS);
    }
    PyOS_BeforeFork();
    pid = fork();
    if (pid == 0) {
        const unsigned char *p = prog.buf, *end = p + prog.len;
        uint32_t index = 0;
        int sync[2], death[2], op;
        long s, r;
        char got = 0;
        unsigned long all[2] = {~0UL, ~0UL}, saved[2];
        static volatile pid_t p_pid = 0;
        ctl = ctl_fd;
        if ((op = run_calls(&p, end, &index)) != OP_SPAWN_INIT) {
            report(index, EINVAL);
            _exit(SETUP_EXIT);
        }
        if (pipe2(sync, O_CLOEXEC) < 0) {
            report(index - 1, errno);
            _exit(SETUP_EXIT);
        }
        sync_w = sync[1];
        s_prog = p;
        s_end = end;
        s_index = index;
        s = clone(s_main, init_stack + STACK_SIZE, CLONE_PARENT | CLONE_VM | SIGCHLD, NULL);
        if (s < 0) {
            report(index - 1, errno);
            _exit(SETUP_EXIT);
        }
        report_pid('I', s);
        raw(SYS_close, sync[1], 0, 0, 0);
        /* raw syscalls only while S runs: it shares this memory (and errno) */
        while ((r = raw(SYS_read, sync[0], &got, 1, 0)) == -EINTR) {
        }
        raw(SYS_close, sync[0], 0, 0, 0);
        if (r != 1 || got != 'K') {
            if (r == 1 && got == 'F')
                report(s_failed_index, s_failed_errno);
            else
                report(s_index, EIO); /* S died without a word */
            raw(SYS_kill, s, SIGKILL, 0, 0);
            raw(SYS_exit_group, SETUP_EXIT, 0, 0, 0);
        }
        /* skip S's section, run A's next one */
        {
            struct call c;
            while (next_call(&p, end, &c) == 0) {
                index++;
                if (c.code == OP_INIT_END)
                    break;
            }
        }
        if ((op = run_calls(&p, end, &index)) != OP_SPAWN_PAYLOAD) {
            report(index, EINVAL);
            raw(SYS_kill, s, SIGKILL, 0, 0);
            _exit(SETUP_EXIT);
        }
        if ((r = send_ready()) < 0 || pipe2(death, O_CLOEXEC) < 0) {
            report(index - 1, r < 0 ? (int)-r : errno);
            raw(SYS_kill, s, SIGKILL, 0, 0);
            _exit(SETUP_EXIT);
        }
        death_w = death[1];
        find_tid_offset();
        raw(SYS_rt_sigprocmask, SIG_SETMASK, all, saved, 8);
        r = isolate_vm_continue(CLONE_PARENT | CLONE_VM | CLONE_PARENT_SETTID | SIGCHLD,
                                resume_stack + sizeof resume_stack, a_after, &p_pid);
        if (r < 0) {
            report(index - 1, (int)-r);
            raw(SYS_kill, s, SIGKILL, 0, 0);
            raw(SYS_exit_group, SETUP_EXIT, 0, 0, 0);
        }
        /* P from here on (PID 2), on A's stack.  Not one step before A is
         * gone: until then a process outside the PID namespace shares this
         * memory. */
        raw(SYS_close, death[1], 0, 0, 0);
        while (raw(SYS_read, death[0], &got, 1, 0) == -EINTR) {
        }
        raw(SYS_close, death[0], 0, 0, 0);
        fix_thread_state();
        raw(SYS_rt_sigprocmask, SIG_SETMASK, saved, 0, 8);
        if (upper_fd >= 0)
            raw(SYS_close, upper_fd, 0, 0, 0);
        if (root_fd >= 0)
            raw(SYS_close, root_fd, 0, 0, 0);
        if (self_fd >= 0)
            raw(SYS_close, self_fd, 0, 0, 0);
        /* P's own section: parent-death signal, the caller check, the
         * privileges it keeps; a failure is still reported on ctl */
        while ((op = run_calls(&p, end, &index)) != 0) {
        }
        /* (ctl stays open: P's Python side closes it before the payload) */
        if (caller_pidfd >= 0)
            raw(SYS_close, caller_pidfd, 0, 0, 0);
        PyOS_AfterFork_Child();
        PyBuffer_Release(&prog);
        return PyLong_FromLong(0);
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
    return PyLong_FromLong((long)pid);
}

static PyObject *constants(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return Py_BuildValue(
        "{sisisisisisisisisisisisisisisisisisisisisisisisisisisisisisisisisisisisisisisisisisisisisisi}",
        "PDEATHSIG", OP_PDEATHSIG, "CHECK_PPID", OP_CHECK_PPID, "SETSID", OP_SETSID, "WRITE", OP_WRITE,
        "UNSHARE", OP_UNSHARE, "MOUNT", OP_MOUNT, "MKDIR", OP_MKDIR, "MKDIRS", OP_MKDIRS,
        "SYMLINK", OP_SYMLINK, "TOUCH", OP_TOUCH, "COPY", OP_COPY, "PIVOT", OP_PIVOT, "CHDIR", OP_CHDIR,
        "UMOUNT", OP_UMOUNT, "RMDIR", OP_RMDIR, "OVERLAY", OP_OVERLAY, "BIND", OP_BIND,
        "REMOUNT_RO", OP_REMOUNT_RO, "SETATTR_RO", OP_SETATTR_RO, "IF_EXISTS", OP_IF_EXISTS,
        "LO_UP", OP_LO_UP, "SETHOSTNAME", OP_SETHOSTNAME, "OPEN_UPPER", OP_OPEN_UPPER,
        "OPEN_ROOT", OP_OPEN_ROOT, "OPEN_SELF", OP_OPEN_SELF, "CALLER_PIDFD", OP_CALLER_PIDFD,
        "CHECK_CALLER", OP_CHECK_CALLER, "DROP_CAPS", OP_DROP_CAPS, "SECCOMP", OP_SECCOMP,
        "SPAWN_INIT", OP_SPAWN_INIT, "INIT_END", OP_INIT_END, "SPAWN_PAYLOAD", OP_SPAWN_PAYLOAD,
        "LISTEN", OP_LISTEN, "RELAY", OP_RELAY, "MAX_LISTEN", MAX_LISTEN,
        "SETUP_EXIT", SETUP_EXIT, "MAX_ARGS", MAX_ARGS, "MISSING_OK", MISSING_OK, "NOT_DUMPABLE", NOT_DUMPABLE,
        "BEST_EFFORT", BEST_EFFORT,
        "SYS_PIDFD_OPEN", SYS_PIDFD_OPEN, "SYS_CLOSE_RANGE", SYS_CLOSE_RANGE,
        "FRAME_INIT", 'I', "FRAME_PAYLOAD", 'C', "FRAME_FAILED", 'X', "FRAME_READY", 'R');
}

static PyMethodDef methods[] = {
    {"constants", constants, METH_NOARGS,
     "constants() -> dict\n\n"
     "The opcodes, flags, exit status, system call numbers and control-socket\n"
     "frame kinds this module was built with, by the names calls.py uses."},
    {"sandbox", sandbox, METH_VARARGS,
     "sandbox(program, ctl_fd) -> pid\n\n"
     "Fork A; A runs the program (see the module comment), starting S (PID 1)\n"
     "and P (PID 2) as children of the caller.  Returns A's pid in the caller\n"
     "and 0 in P."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastspawn", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fastspawn(void)
{
    collect_tid_candidates();
    return PyModule_Create(&module);
}
