/* Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 weights against q8a activations (legacy_common.h), AVX-512 VNNI.
 * Twin of legacy_scalar.c (the specification); the body is legacy_avx512_impl.h.
 *
 * Instructions: vpdpbusd zmm (u8 x s8, four products summed straight into int32), vcvtdq2ps +
 * vfmadd231ps over two blocks per register; vpabsb + vpmovb2m + masked vpsubb for Q8_0's sign;
 * masked vpaddb from the qh bits (kmovq) for Q5; (masked) vbroadcasti32x4 + masked vpsrlw to
 * unpack nibbles; vcvtph2ps for four fp16 scales at a time, vpermps to spread the combined scales
 * over each block's 8 lanes.
 *
 * Overflow limits: vpdpbusd has no int16 intermediate. Each int32 lane starts from 0 and sums 4
 * products of one block: |lane| <= 4 * 128 * 127 = 65024 (Q8_0; Q5: 4 * 31 * 127, Q4: 4 * 15 * 127),
 * far inside int32; blocks are scaled and summed in float32. Q4_0/Q5_0 offsets and Q4_1/Q5_1
 * mins stay out of the integer product (-off * dw_b * s_b or m_b * s_b per block, accumulated in
 * float32 next to the main sum).
 *
 * GEMM: each unpacked pair of weight blocks serves up to 4 activation rows.
 */
#define LEGACY_VNNI 1
#include "legacy_avx512_impl.h"

LEGACY_ENTRY_POINTS(avx512vnni, FC_ISA_AVX512_VNNI)
