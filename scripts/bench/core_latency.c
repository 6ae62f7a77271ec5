/* Cache-line round trip between two CPUs, in nanoseconds.
 *
 * Two threads, pinned to the first two CPUs this process may run on, hand
 * one cache line back and forth. About 70 ns on this 2-vCPU VM when the host
 * runs both vCPUs on cores that share an L3; about 330 ns when it places them
 * on different CCDs, and then every step that shares data between two
 * threads (MKL's GEMMs, ATen's parallel kernels) pays for it.
 * step_floor.py compiles this with `cc -O2 -pthread` and reports it per rep.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

#define ROUNDS 100000

static _Atomic long line __attribute__((aligned(64)));
static int cpus[2];

static void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void *partner(void *unused) {
  (void)unused;
  pin(cpus[1]);
  for (long i = 0; i < ROUNDS; i++) {
    while (atomic_load(&line) != 2 * i + 1) {
    }
    atomic_store(&line, 2 * i + 2);
  }
  return NULL;
}

int main(void) {
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return 1;
  int found = 0;
  for (int c = 0; c < CPU_SETSIZE && found < 2; c++) {
    if (CPU_ISSET(c, &allowed)) cpus[found++] = c;
  }
  if (found < 2) {
    fprintf(stderr, "core_latency: fewer than two CPUs\n");
    return 1;
  }
  pin(cpus[0]);
  pthread_t thread;
  if (pthread_create(&thread, NULL, partner, NULL) != 0) return 1;
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (long i = 0; i < ROUNDS; i++) {
    atomic_store(&line, 2 * i + 1);
    while (atomic_load(&line) != 2 * i + 2) {
    }
  }
  clock_gettime(CLOCK_MONOTONIC, &b);
  pthread_join(thread, NULL);
  printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / ROUNDS);
  return 0;
}
