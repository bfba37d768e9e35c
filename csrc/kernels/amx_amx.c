/* Placeholder: no kernels at this level yet; the level inherits the one below. */
#include "fc_internal.h"

FC_REG(amx_amx) { (void)t; }
