/* CPU feature detection (cpuid + xgetbv) and ISA level selection.
 * Compiled for baseline x86-64: it must run on any CPU, so it only reads cpuid and never
 * executes an instruction it is testing for. */
#define _GNU_SOURCE
#include <cpuid.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fc_internal.h"

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static fc_cpu_features g_cpu;
static pthread_once_t g_cpu_once = PTHREAD_ONCE_INIT;

static uint64_t read_xcr0(void) {
    uint32_t lo, hi;
    /* xgetbv, encoded as bytes so that no -mxsave flag is needed */
    __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static int count_physical_cores(int *logical) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) != 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        *logical = n > 0 ? (int)n : 1;
        return *logical;
    }
    *logical = CPU_COUNT(&set);
    /* a physical core is a distinct (package, core) pair among the CPUs we may run on */
    int keys_n = 0;
    static long keys[4096];
    for (int c = 0; c < CPU_SETSIZE && keys_n < 4096; c++) {
        if (!CPU_ISSET(c, &set)) continue;
        char path[128];
        long pkg = 0, core = c;
        FILE *f;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/physical_package_id", c);
        if ((f = fopen(path, "r"))) { if (fscanf(f, "%ld", &pkg) != 1) pkg = 0; fclose(f); }
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/core_id", c);
        if ((f = fopen(path, "r"))) { if (fscanf(f, "%ld", &core) != 1) core = c; fclose(f); }
        long key = pkg * 1000000 + core;
        int seen = 0;
        for (int i = 0; i < keys_n; i++) if (keys[i] == key) { seen = 1; break; }
        if (!seen) keys[keys_n++] = key;
    }
    return keys_n > 0 ? keys_n : *logical;
}

static void detect(void) {
    fc_cpu_features *f = &g_cpu;
    memset(f, 0, sizeof *f);
    unsigned a, b, c, d;
    unsigned max_leaf = __get_cpuid_max(0, NULL);
    if (max_leaf >= 1) {
        __cpuid(1, a, b, c, d);
        f->sse42 = (c >> 20) & 1;
        f->fma = (c >> 12) & 1;
        f->avx = (c >> 28) & 1;
        f->f16c = (c >> 29) & 1;
        int osxsave = (c >> 27) & 1;
        if (osxsave) {
            uint64_t xcr0 = read_xcr0();
            f->os_avx = (xcr0 & 0x6) == 0x6;
            f->os_avx512 = f->os_avx && (xcr0 & 0xe0) == 0xe0;
            f->os_amx = (xcr0 & (3u << 17)) == (3u << 17);
        }
    }
    if (max_leaf >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        unsigned sub_max = a;
        f->avx2 = (b >> 5) & 1;
        f->avx512f = (b >> 16) & 1;
        f->avx512dq = (b >> 17) & 1;
        f->avx512bw = (b >> 30) & 1;
        f->avx512vl = (b >> 31) & 1;
        f->avx512_vnni = (c >> 11) & 1;
        f->amx_bf16 = (d >> 22) & 1;
        f->amx_tile = (d >> 24) & 1;
        f->amx_int8 = (d >> 25) & 1;
        if (sub_max >= 1) {
            __cpuid_count(7, 1, a, b, c, d);
            f->avx_vnni = (a >> 4) & 1;
            f->avx512_bf16 = (a >> 5) & 1;
        }
    }
    if (f->amx_tile && f->os_amx) {
        /* Linux keeps tile data disabled until a process asks for it. */
        f->amx_permitted = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    }
    f->physical_cores = count_physical_cores(&f->logical_cpus);
}

const fc_cpu_features *fc_cpu(void) {
    pthread_once(&g_cpu_once, detect);
    return &g_cpu;
}

static const char *const isa_names[FC_ISA_COUNT] = {
    [FC_ISA_SCALAR] = "scalar",           [FC_ISA_AVX2] = "avx2",
    [FC_ISA_AVX512] = "avx512",           [FC_ISA_AVX512_VNNI] = "avx512_vnni",
    [FC_ISA_AVX512_BF16] = "avx512_bf16", [FC_ISA_AMX] = "amx",
    [FC_ISA_AMX_SIM] = "amx_sim",
};

const char *fc_isa_name(fc_isa isa) {
    return (unsigned)isa < FC_ISA_COUNT ? isa_names[isa] : "unknown";
}

int fc_isa_from_name(const char *name) {
    for (int i = 0; i < FC_ISA_COUNT; i++)
        if (strcmp(name, isa_names[i]) == 0) return i;
    return -1;
}

/* The CPU requirement of each level; NULL when met, else what is missing. */
static const char *missing_for(fc_isa isa) {
    const fc_cpu_features *f = fc_cpu();
    switch (isa) {
    case FC_ISA_AMX_SIM: /* the tile model is plain C; its other kernels come from the best level */
    case FC_ISA_SCALAR:
        return NULL;
    case FC_ISA_AMX:
        if (!f->amx_tile) return "AMX-TILE (cpuid)";
        if (!f->amx_int8) return "AMX-INT8 (cpuid)";
        if (!f->amx_bf16) return "AMX-BF16 (cpuid)";
        if (!f->os_amx) return "OS support for AMX tile state (xgetbv XCR0 bits 17-18)";
        if (!f->amx_permitted) return "Linux permission for AMX tile data (arch_prctl ARCH_REQ_XCOMP_PERM refused)";
        /* AMX kernels lean on the AVX-512 BF16 level for everything else */
        __attribute__((fallthrough));
    case FC_ISA_AVX512_BF16:
        if (!f->avx512_bf16) return "AVX512_BF16";
        __attribute__((fallthrough));
    case FC_ISA_AVX512_VNNI:
        if (!f->avx512_vnni) return "AVX512_VNNI";
        __attribute__((fallthrough));
    case FC_ISA_AVX512:
        if (!f->avx512f) return "AVX512F";
        if (!f->avx512bw) return "AVX512BW";
        if (!f->avx512vl) return "AVX512VL";
        if (!f->avx512dq) return "AVX512DQ";
        if (!f->os_avx512) return "OS support for AVX-512 state (xgetbv XCR0 bits 5-7)";
        __attribute__((fallthrough));
    case FC_ISA_AVX2:
        if (!f->avx) return "AVX";
        if (!f->avx2) return "AVX2";
        if (!f->fma) return "FMA";
        if (!f->f16c) return "F16C";
        if (!f->os_avx) return "OS support for AVX state (xgetbv XCR0 bits 1-2)";
        return NULL;
    default:
        return "an unknown ISA level";
    }
}

int fc_isa_supported(fc_isa isa, const char **why) {
    const char *m = missing_for(isa);
    if (why) *why = m;
    return m == NULL;
}

fc_isa fc_isa_best(void) {
    static const fc_isa order[] = {FC_ISA_AMX, FC_ISA_AVX512_BF16, FC_ISA_AVX512_VNNI,
                                   FC_ISA_AVX512, FC_ISA_AVX2, FC_ISA_SCALAR};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
        if (fc_isa_supported(order[i], NULL)) return order[i];
    return FC_ISA_SCALAR;
}
