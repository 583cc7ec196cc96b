/* The fp32 peak of one CPU core: 12 independent chains of AVX-512 fused multiply-adds.
 *
 *   gcc -O2 -mavx512f -mfma scripts/cpu_fma_peak.c -o /tmp/fma && /tmp/fma
 *   (taskset -c 0 /tmp/fma & taskset -c 1 /tmp/fma & wait)     # every core at once
 *
 * Each chain waits only on itself, so the FMA pipes stay full; 16 lanes x 2 FLOP per FMA.
 * docs/performance.md uses it as the roofline of the CPU training step.
 */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
  enum { CHAINS = 12 };
  const long iterations = 200000000;
  __m512 acc[CHAINS];
  const __m512 mul = _mm512_set1_ps(0.9999f), add = _mm512_set1_ps(1e-6f);
  for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_ps((float)i);
  double start = now();
  for (long k = 0; k < iterations; k++) {
#pragma GCC unroll 12
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_fmadd_ps(acc[i], mul, add);
  }
  double seconds = now() - start;
  float checksum = 0;  /* keeps the loop from being optimised away */
  for (int i = 0; i < CHAINS; i++) checksum += _mm512_reduce_add_ps(acc[i]);
  printf("%.1f GFLOP/s fp32 (checksum %g)\n", iterations * CHAINS * 16 * 2.0 / seconds / 1e9,
         checksum);
  return 0;
}
