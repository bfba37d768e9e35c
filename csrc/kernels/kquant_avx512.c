/* Q4_K, Q5_K, Q6_K x kq_act, AVX-512 F/BW/VL: vpmaddubsw + vpmaddwd (int16 pair sums at most
 * 2*63*127 = 16002: no saturation), int32 per super-block (< 2^30), float32 across super-blocks.
 * The kernels are in kquant_avx512_impl.h. */
#include "kquant_avx512_impl.h"

FC_REG(kquant_avx512) { kq_register_avx512(t); }
