/* The simulated Ascend runtime's contract-violation count, for tests that run
 * on it (the acl backend's CTest re-runs). C and C++; uses only libc and libdl. */
#ifndef LLMDD_T_SIM_H
#define LLMDD_T_SIM_H

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* On the simulated Ascend runtime (LLMDD_ASCEND_LIB_DIR set, the library
 * loaded): contract violations it recorded in this process on teardown paths,
 * whose error codes llmdd cannot report (0 elsewhere). */
static inline int t_sim_violations(void) {
  const char *dir = getenv("LLMDD_ASCEND_LIB_DIR");
  if (!dir || !dir[0]) return 0;
  char path[4096];
  snprintf(path, sizeof path, "%s/libascendcl.so", dir);
  void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
  if (!h) return 0;
  int (*f)(char *, size_t) = NULL;
  void *sym = dlsym(h, "sim_ascend_violations");
  memcpy(&f, &sym, sizeof sym); /* object to function pointer, in C and C++ */
  int n = f ? f(NULL, 0) : 0;
  dlclose(h);
  return n;
}

#endif
