/*
 * dispatch.c - choose the kernel table once, from what the CPU and the OS
 * support (GCC/Clang's __builtin_cpu_supports checks both), unless the
 * environment variable BPCORE_KERNEL=ref|avx2|avx512 asks for one.  A kernel
 * the machine cannot run (or this build lacks) is never chosen, nor is an
 * unknown name: the best available one is, and bp_kernel_request says so
 * (the Python layer refuses to load then).
 */
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

static const kernel_table *chosen = &kernel_table_ref;

static int
cpu_has(const char *isa)
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    if (strcmp(isa, "avx2") == 0) {
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    if (strcmp(isa, "avx512") == 0) {
#ifdef BPCORE_AVX512_ON_AVX2
        /* testing aid: that table was compiled for AVX2 */
        return __builtin_cpu_supports("avx2") &&
               __builtin_cpu_supports("fma");
#else
        return __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("fma");
#endif
    }
#else
    (void)isa;
#endif
    return 0;
}

/* What became of BPCORE_KERNEL (bp_kernel_request). */
static int request = BP_KERNEL_DEFAULT;

/* The kernels by name, best last; a table this build lacks is NULL. */
static const struct {
    const char *name;
    const kernel_table *table;
} known[] = {
    {"ref", &kernel_table_ref},
#ifdef BPCORE_HAVE_AVX2
    {"avx2", &kernel_table_avx2},
#else
    {"avx2", NULL},
#endif
#ifdef BPCORE_HAVE_AVX512
    {"avx512", &kernel_table_avx512},
#else
    {"avx512", NULL},
#endif
};
#define N_KNOWN (sizeof known / sizeof known[0])

/* Whether kernel i is built and runs on this CPU. */
static int
usable(size_t i)
{
    return known[i].table != NULL && (i == 0 || cpu_has(known[i].name));
}

void
kernels_choose(void)
{
    const char *want = getenv("BPCORE_KERNEL");

    for (size_t i = 0; i < N_KNOWN; i++) {
        if (usable(i)) {
            chosen = known[i].table;  /* the best usable one */
        }
    }
    request = BP_KERNEL_DEFAULT;
    if (want == NULL || want[0] == '\0') {
        return;
    }
    request = BP_KERNEL_UNKNOWN;
    for (size_t i = 0; i < N_KNOWN; i++) {
        if (strcmp(want, known[i].name) == 0) {
            request = usable(i) ? BP_KERNEL_AS_ASKED : BP_KERNEL_UNAVAILABLE;
            chosen = usable(i) ? known[i].table : chosen;
        }
    }
}

int
bp_kernel_request(void)
{
    return request;
}

const kernel_table *
kernels(void)
{
    return chosen;
}
