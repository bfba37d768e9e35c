/* Instructions of the 16-row kernels (legacyx16_avx512vnni.c, kquantx16_avx512vnni.c) written
 * as inline asm, because GCC's code for the intrinsics costs the streaming GEMVs bandwidth: the
 * fewer uops the core spends per weight line, and the more evenly it asks for the lines ahead,
 * the more lines it keeps in flight.
 *
 * dpbusd_b / dpwssd_b: vpdpbusd / vpdpwssd of a weight register against one dword of activations
 * broadcast to every lane, as the instruction's {1to16} memory operand. GCC emits
 * _mm512_dpbusd_epi32(acc, w, _mm512_set1_epi32(load)) as vpbroadcastd + the register form, two
 * fused uops where the memory form is one, and the 16-row kernels issue one such product per 32
 * weight bytes: Q4_K's packed GEMV went from 42 to 49 GB/s per core with its weights in L2, and
 * from ~0.86 to ~0.90-0.93 of the read bandwidth streaming from memory (1 thread). */
#ifndef FC_X16_ASM_H
#define FC_X16_ASM_H

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

/* v + b in the bytes of mask k, in place (the Q5 formats' fifth bits): for
 * _mm512_mask_add_epi8(v, k, v, b) GCC copies v to a new register first, a uop per 64 codes spent
 * on nothing. */
static inline __attribute__((always_inline)) __m512i add_masked(__m512i v, __mmask64 k, __m512i b) {
    __asm__("vpaddb %2, %0, %0%{%1%}" : "+v"(v) : "Yk"(k), "v"(b));
    return v;
}

/* prefetcht1 of the line at p, kept where the source puts it. GCC's scheduler gathered
 * _mm_prefetch calls spread through an unrolled super-block into one burst of 35-52 at its top,
 * which leaves the core nothing to ask for while it computes the rest: the K-quant GEMVs streamed
 * at 0.86-0.87 of the read bandwidth that way, at 0.89-0.92 with the prefetches in place (2
 * threads, 3 interleaved pairs). A volatile asm is a scheduling barrier to GCC. */
#define PF_L2_INORDER(p) __asm__ volatile("prefetcht1 %0" : : "m"(*(const char *)(p)))

#endif
