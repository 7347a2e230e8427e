/*
 * One copy of the caller's address space per sandbox instead of three.
 *
 * A (a fork of the caller, already in the sandbox's new user, mount, net, ...
 * namespaces and with pid_for_children pointing at a new PID namespace)
 * calls spawn():
 *
 *   1. init = clone(CLONE_VM) running init_main() on a static stack: PID 1 of
 *      the new namespace.  It shares A's memory but only ever touches its own
 *      stack and makes raw system calls (no errno: the TLS is shared), so it
 *      costs no page-table copy.  It reaps every orphan until it is killed.
 *   2. P = clone(CLONE_VM | CLONE_VFORK): PID 2.  P continues *A's* Python
 *      program on A's original stack (it returns from spawn() into Python and
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
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
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

static int init_main(void *arg)
{
    unsigned long chld = 1UL << (SIGCHLD - 1);
    (void)arg;
    raw(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0);
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

static void find_tid_offset(void)
{
    pid_t tid = (pid_t)raw(SYS_gettid, 0, 0, 0, 0);
    char *self = (char *)pthread_self();
    long off;
    if (tid_offset >= 0 && *(pid_t *)(self + tid_offset) == tid)
        return;
    tid_offset = -1;
    for (off = 0; off < 4096; off += 4) {
        if (*(pid_t *)(self + off) == tid) {
            tid_offset = off;
            return;
        }
    }
}

static PyObject *spawn(PyObject *self, PyObject *args)
{
    int fd;
    unsigned long all[2] = {~0UL, ~0UL};
    long r;
    (void)self;
    if (!PyArg_ParseTuple(args, "i", &fd))
        return NULL;
    chan_fd = fd;
    find_tid_offset();
    raw(SYS_rt_sigprocmask, SIG_SETMASK, all, saved_mask, 8);
    r = clone(init_main, init_stack + STACK_SIZE, CLONE_VM | SIGCHLD, NULL);
    if (r < 0) {
        int err = errno;
        raw(SYS_rt_sigprocmask, SIG_SETMASK, saved_mask, 0, 8);
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    init_pid = (pid_t)r;
    r = isolate_vfork_continue(CLONE_VM | CLONE_VFORK | CLONE_PARENT_SETTID | SIGCHLD,
                               resume_stack + STACK_SIZE, a_after, &payload_pid);
    if (r < 0) {
        raw(SYS_kill, init_pid, SIGKILL, 0, 0);
        raw6(SYS_wait4, init_pid, 0, __WALL, 0, 0, 0);
        raw(SYS_rt_sigprocmask, SIG_SETMASK, saved_mask, 0, 8);
        errno = (int)-r;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    /* P from here on. */
    fix_thread_state();
    raw(SYS_rt_sigprocmask, SIG_SETMASK, saved_mask, 0, 8);
    return Py_BuildValue("(ii)", (int)init_pid, (int)payload_pid);
}

static PyMethodDef methods[] = {
    {"spawn", spawn, METH_VARARGS,
     "spawn(channel_fd) -> (init_host_pid, payload_host_pid)\n\n"
     "Start a C init as PID 1 of the pending PID namespace and continue this\n"
     "program as PID 2; returns only in PID 2.  The calling process waits,\n"
     "reports PID 2's wait status on channel_fd, kills PID 1 and exits."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastspawn", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fastspawn(void) { return PyModule_Create(&module); }
