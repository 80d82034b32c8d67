/* Process-level fault helpers for the fault scenarios: SIGKILL / SIGSTOP /
 * SIGCONT of a child, a process created with a chosen pid (clone3 set_tid),
 * and a look into this process's mappings. Uses only libc. */
#ifndef LLMDD_T_PROC_H
#define LLMDD_T_PROC_H

#include "llmdd_test.h"

#include <errno.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

/* Kills `pid` with SIGKILL and reaps it; returns its wait status code (t_wait). */
static inline int t_kill9(pid_t pid) {
  kill(pid, SIGKILL);
  return t_wait(pid, 5000);
}

/* Stops / resumes `pid` (SIGSTOP / SIGCONT) and waits until the kernel reports it. */
static inline void t_stop(pid_t pid) {
  kill(pid, SIGSTOP);
  int st;
  waitpid(pid, &st, WUNTRACED);
}

static inline void t_cont(pid_t pid) {
  kill(pid, SIGCONT);
  int st;
  waitpid(pid, &st, WCONTINUED);
}

struct t_clone_args {
  uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid,
      set_tid_size, cgroup;
};

/* Creates a child with pid `pid` (clone3 with set_tid; needs root or
 * CAP_CHECKPOINT_RESTORE and a free pid). The child waits until `gate` is
 * readable (60 s at most, and dies with its parent), then exits with
 * fn(arg). Only raw system calls may run in it when the parent has threads.
 * Returns the pid, or -errno when the kernel refuses. */
static inline pid_t t_fork_with_pid(pid_t pid, int gate, int (*fn)(void *), void *arg) {
  pid_t tid = pid;
  struct t_clone_args a;
  memset(&a, 0, sizeof a);
  a.exit_signal = SIGCHLD;
  a.set_tid = (uint64_t)(uintptr_t)&tid;
  a.set_tid_size = 1;
  fflush(stdout);
  fflush(stderr);
  long r = syscall(SYS_clone3, &a, sizeof a);
  if (r < 0) return -errno;
  if (r == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    struct pollfd p = {gate, POLLIN, 0};
    poll(&p, 1, 60000);
    _exit(fn(arg));
  }
  return (pid_t)r;
}

/* True if a line of /proc/self/maps contains `needle`. */
static inline int t_maps_contain(const char *needle) {
  FILE *f = fopen("/proc/self/maps", "r");
  if (!f) return 0;
  char line[512];
  int found = 0;
  while (!found && fgets(line, sizeof line, f)) found = strstr(line, needle) != NULL;
  fclose(f);
  return found;
}

#endif
