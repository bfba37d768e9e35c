/* vpdpbusd / vpdpwssd of a weight register against one dword of activations broadcast to every
 * lane, written as the instruction's {1to16} memory operand (AVX-512 VNNI kernel files only).
 *
 * Why: GCC emits _mm512_dpbusd_epi32(acc, w, _mm512_set1_epi32(load)) as vpbroadcastd + the
 * register form, two fused uops where the memory form is one. A GEMV's 16-row kernels issue one
 * such product per 32 weight bytes, and the fewer uops the core spends per weight line, the more
 * lines it keeps in flight: Q4_K's packed GEMV went from 42 to 49 GB/s per core with its weights
 * in L2, and from ~0.86 to ~0.90-0.93 of the read bandwidth streaming from memory (1 thread). */
#ifndef FC_VNNI_BCAST_H
#define FC_VNNI_BCAST_H

#include <immintrin.h>
#include <stdint.h>

static inline __attribute__((always_inline)) __m512i dpbusd_b(__m512i acc, __m512i w, const void *p) {
    __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*(const int32_t *)p));
    return acc;
}

static inline __attribute__((always_inline)) __m512i dpwssd_b(__m512i acc, __m512i w, const void *p) {
    __asm__("vpdpwssd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*(const int32_t *)p));
    return acc;
}

#endif
