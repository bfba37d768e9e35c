/* AMX kernels on real tiles (Sapphire Rapids and later): LDTILECFG, TILEZERO, TILELOADD, TILESTORED,
 * TILERELEASE, TDPBSSD (AMX-INT8) for the integer formats, TDPBF16PS (AMX-BF16) for BF16/F16; the
 * scale/convert loops around them are plain C the compiler vectorizes with AVX-512.
 * Accumulators: int32 per 32-weight (Q6_K: 16) sub-block, |sum| <= 32 * 128 * 127 < 2^20, then
 * fp32; bf16 products accumulate in fp32 inside the tile over all of K.
 * Only ever called after cpu.c found AMX-TILE/INT8/BF16 in cpuid, XCR0 bits 17-18 set and
 * arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) granted. Kernel logic: amx_kernels.inc,
 * shared with the tile model build amx_amxsim.c. */
#include <immintrin.h>
#include <math.h>

#include "fc_internal.h"

#define FC_AMX_SUFFIX(name) name##_amx
#define FC_AMX_ISA FC_ISA_AMX
#define TILE_CFG(p) _tile_loadconfig(p)
#define TILE_RELEASE() _tile_release()
#define TILE_ZERO(t) _tile_zero(t)
#define TILE_LOAD(t, base, stride) _tile_loadd(t, (base), (stride))
#define TILE_STORE(t, base, stride) _tile_stored(t, (base), (stride))
#define TILE_DPBSSD(c, a, b) _tile_dpbssd(c, a, b)
#define TILE_DPBSUD(c, a, b) _tile_dpbsud(c, a, b)
#define TILE_DPBUSD(c, a, b) _tile_dpbusd(c, a, b)
#define TILE_DPBUUD(c, a, b) _tile_dpbuud(c, a, b)
#define TILE_DPBF16PS(c, a, b) _tile_dpbf16ps(c, a, b)
#define TILE_FAULT() ((const char *)NULL)

#include "amx_kernels.inc"

FC_REG(amx_amx) { amx_register(t); }
