/* Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 weights against q8a activations (legacy_common.h), AVX-512 F/BW/VL.
 * Twin of legacy_scalar.c (the specification); the body is legacy_avx512_impl.h.
 *
 * Instructions: vpmaddubsw zmm (u8 x s8 -> pairwise int16), vpmaddwd by ones (-> int32),
 * vcvtdq2ps + vfmadd231ps over two blocks per register; vpabsb + vpmovb2m + masked vpsubb for
 * Q8_0's sign (no vpsignb on zmm); masked vpaddb from the qh bits (kmovq) for Q5; (masked)
 * vbroadcasti32x4 + masked vpsrlw to unpack nibbles; vcvtph2ps for four fp16 scales at a time,
 * vpermps to spread the combined scales over each block's 8 lanes.
 *
 * Overflow limits: vpmaddubsw saturates at int16. Operands are an unsigned weight code and a
 * signed activation with |a| <= 127 (q8a never produces -128):
 *   Q4 codes 0..15: |pair| <= 3810;  Q5 codes 0..31: |pair| <= 7874;
 *   Q8_0 |w| <= 128 with the sign moved onto a: |pair| <= 2 * 128 * 127 = 32512 < 32767,
 * so it never saturates. vpmaddwd adds two pairs per int32 lane (|lane| <= 65024), exact; blocks
 * are scaled and summed in float32. Q4_0/Q5_0 offsets and Q4_1/Q5_1 mins stay out of the integer
 * product (-off * dw_b * s_b or m_b * s_b per block, accumulated in float32 next to the main sum).
 *
 * GEMM: each unpacked pair of weight blocks serves up to 4 activation rows.
 */
#include "legacy_avx512_impl.h"

LEGACY_ENTRY_POINTS(avx512, FC_ISA_AVX512)
