/* AMX kernels on the software tile model (amx_tile_model.h): plain C, runs on any CPU, never chosen
 * automatically (FASTCPU_ISA=amx_sim). Same kernel source as amx_amx.c (amx_kernels.inc).
 * Instructions: none beyond baseline x86-64; the model does the tile arithmetic.
 * Accumulators: as amx_amx.c (int32 per 32-weight sub-block, fp32 for bf16), since the model
 * reproduces the instructions' arithmetic. */
#include <math.h>

#include "fc_internal.h"
#include "amx_tile_model.h"

#define FC_AMX_SIM_BUILD 1
#define FC_AMX_SUFFIX(name) name##_amxsim
#define FC_AMX_ISA FC_ISA_AMX_SIM
#define TILE_CFG(p) fcsim_ldtilecfg(p)
#define TILE_RELEASE() fcsim_tilerelease()
#define TILE_ZERO(t) fcsim_tilezero(t)
#define TILE_LOAD(t, base, stride) fcsim_tileloadd((t), (base), (stride))
#define TILE_STORE(t, base, stride) fcsim_tilestored((t), (base), (stride))
#define TILE_DPBSSD(c, a, b) fcsim_tdpbssd((c), (a), (b))
#define TILE_DPBSUD(c, a, b) fcsim_tdpbsud((c), (a), (b))
#define TILE_DPBUSD(c, a, b) fcsim_tdpbusd((c), (a), (b))
#define TILE_DPBUUD(c, a, b) fcsim_tdpbuud((c), (a), (b))
#define TILE_DPBF16PS(c, a, b) fcsim_tdpbf16ps((c), (a), (b))
#define TILE_FAULT() fcsim_take_fault()

#include "amx_kernels.inc"

FC_REG(amx_amxsim) { amx_register(t); }
