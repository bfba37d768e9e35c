/* Q4_K, Q5_K, Q6_K x kq_act, AVX-512 VNNI: vpdpbusd (int32 quads at most 4*63*127 = 32004, which
 * fit the low int16 of a lane) then vpdpwssd by the sub-block scale; int32 per super-block
 * (< 2^30), float32 across super-blocks. The kernels are in kquant_avx512_impl.h. */
#define KQ_VNNI 1
#include "kquant_avx512_impl.h"

FC_REG(kquant_avx512vnni) { kq_register_avx512vnni(t); }
